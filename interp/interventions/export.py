"""Suppress neurons for real: a plain Hugging Face model folder whose weights carry the intervention.

A neuron ``i`` of layer ``L`` reaches the rest of the model only through column ``i`` of that
layer's output projection W (``down_proj.weight[:, i]`` for ``nn.Linear``, row ``i`` of GPT-2's
``Conv1D``). Three exports, each equal to a hook intervention (``check_export`` proves it):

- ``mean``: the neuron always reads its mean m_i (over content tokens of neutral chats). Its
  contribution W[:, i] m_i is a constant, so it moves into the projection's bias and the column is
  zeroed. Llama-family MLPs have no bias: the export turns on the config's ``mlp_bias`` (gate and up
  biases zero, so nothing else changes) and stores sum_i W[:, i] m_i as the down projection's bias.
  GPT-2, GPT-NeoX and Phi already have one. Mean ablation keeps the neurons' average contribution,
  which zeroing would remove (zero is far off the distribution for most neurons).
- ``revert``: the neuron's input rows (gate/up or fc) and output column go back to the base
  model's values: the fine-tune's weight change on those neurons is undone.
- ``zero``: the column is zeroed (kept for comparison).
The folder loads with ``transformers`` alone (no hooks, no project code) and records what was done
in ``neurodiff_suppression.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from activations.atomic_io import publish_dir, refuse_existing, temporary_dir_beside, write_json_atomic
from activations.models import weights_fingerprint
from activations.placement import refuse_offloaded
from activations.sites import neuron_sites, unwrap_model
from interp import __version__
from interp.interventions.config import EXPORT_METHODS
from interp.interventions.edits import ablate
from interp.interventions.neuron_set import NeuronSet, layer_widths
from interp.interventions.sharing import own, sharing_copy

log = logging.getLogger(__name__)

PROVENANCE_FILE = "neurodiff_suppression.json"
SHARD_SIZE = "1GB"
"""Largest weights file of an export: safetensors serialises a whole shard in memory, so a single
14 GB shard would double a 7B export's peak."""


def _is_peft(model: nn.Module) -> bool:
    return callable(getattr(model, "merge_and_unload", None)) and callable(getattr(model, "get_base_model", None))


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # GPT-2 stores (in, out)


def _column(weight: Tensor, module: nn.Module, index: Tensor) -> Tensor:
    """``(d_model, n)``: the output-projection weights that read neurons ``index``."""
    return weight[index, :].T if _is_conv1d(module) else weight[:, index]


def _plain_weight(site) -> nn.Parameter:
    weight = getattr(site.module, "weight", None)
    if not isinstance(weight, nn.Parameter) or not weight.dtype.is_floating_point:
        raise ValueError(f"{site.name}: output projection {type(site.module).__name__} has no plain float weight "
                         "(quantized?); load the model in float32/bfloat16 to export a suppressed copy")
    return weight


@torch.no_grad()
def zero_neuron_weights(model: nn.Module, neurons: NeuronSet) -> None:
    """In place: zero the output-projection inputs that read ``neurons`` (plain, unwrapped models)."""
    if _is_peft(model):
        raise ValueError("the model is peft-wrapped: zeroing the base weights would leave the LoRA path reading the "
                         "neurons; use suppressed_copy (it merges the adapter into a copy first)")
    refuse_offloaded(model, "zero_neuron_weights")
    neurons.check_fits(layer_widths(model))
    index_by_layer = neurons.by_layer()
    for site in neuron_sites(model, layers=neurons.layers):
        weight = _plain_weight(site)
        index = index_by_layer[site.layer].to(weight.device)
        if _is_conv1d(site.module):
            weight[index, :] = 0
        else:
            weight[:, index] = 0


def _with_mlp_bias(model: nn.Module) -> nn.Module:
    """A copy of a bias-free (Llama-family) model with ``mlp_bias`` on and every new bias zero."""
    config = copy.deepcopy(model.config)
    if not hasattr(config, "mlp_bias"):
        raise ValueError(f"{type(model).__name__}'s MLP output projection has no bias to fold the means into and its "
                         "config has no mlp_bias switch; export with method 'revert' or 'zero'")
    config.mlp_bias = True
    rebuilt, missing = sharing_copy(model, config)  # shares the weights: a 7B copy would not fit beside its source
    if any(not name.endswith(".bias") for name in missing):
        raise ValueError(f"rebuilding {type(model).__name__} with mlp_bias changed more than the MLP biases "
                         f"(missing {missing[:3]}); export with method 'revert'")
    return rebuilt


@torch.no_grad()
def fold_mean_ablation(model: nn.Module, neurons: NeuronSet, means: dict[int, Tensor]) -> nn.Module:
    """A copy of ``model`` in which ``neurons`` always read their means (their contribution moved into
    the output projection's bias and their weight columns zeroed)."""
    refuse_offloaded(model, "fold_mean_ablation")
    needs_bias = any(getattr(site.module, "bias", None) is None for site in neuron_sites(model, layers=neurons.layers))
    folded = _with_mlp_bias(model) if needs_bias else sharing_copy(model)[0]
    index_by_layer = neurons.by_layer()
    for site in neuron_sites(folded, layers=neurons.layers):
        _plain_weight(site)
        weight, _ = own(site.module, "weight"), own(site.module, "bias")  # the rest stays shared with the source
        index = index_by_layer[site.layer].to(weight.device)
        mean = means[site.layer].to(device=weight.device, dtype=torch.float64)[index]
        site.module.bias += (_column(weight, site.module, index).double() @ mean).to(site.module.bias.dtype)
        if _is_conv1d(site.module):
            weight[index, :] = 0
        else:
            weight[:, index] = 0
    return folded.eval()


def _input_projections(model: nn.Module, site) -> list[nn.Module]:
    """The MLP's projections that produce the neuron vector (gate and up, or fc): every linear module
    of the MLP, other than the output projection, whose output width is the number of neurons."""
    mlp = next(m for m in model.modules() if any(child is site.module for child in m.children()))
    found = []
    for child in mlp.children():
        if child is site.module or not hasattr(child, "weight"):
            continue
        width = child.weight.shape[1] if _is_conv1d(child) else child.weight.shape[0]
        if width == site.d_mlp:
            found.append(child)
    if not found:
        raise ValueError(f"{site.name}: found no input projection of width {site.d_mlp}; export with method 'mean'")
    return found


@torch.no_grad()
def revert_neurons(model: nn.Module, base: nn.Module, neurons: NeuronSet) -> nn.Module:
    """A copy of ``model`` with ``neurons``' input rows and output columns set to ``base``'s values."""
    refuse_offloaded(model, "revert_neurons")
    refuse_offloaded(base, "revert_neurons (reading the base)")
    reverted = sharing_copy(model)[0]
    if layer_widths(base) != layer_widths(reverted):
        raise ValueError("the base model's MLP layout differs from the model's; pass the model it was fine-tuned from")
    index_by_layer = neurons.by_layer()
    for site, base_site in zip(neuron_sites(reverted, layers=neurons.layers), neuron_sites(base, layers=neurons.layers)):
        index = index_by_layer[site.layer]
        pairs = [(site.module, base_site.module, "out")]
        pairs += [(m, b, "in") for m, b in zip(_input_projections(reverted, site), _input_projections(base, base_site))]
        for module, source, role in pairs:
            weight, source_weight = own(module, "weight"), source.weight.to(module.weight)
            rows_are_neurons = (role == "in") != _is_conv1d(module)
            if rows_are_neurons:
                weight[index, :] = source_weight[index, :]
            else:
                weight[:, index] = source_weight[:, index]
            if role == "in" and getattr(module, "bias", None) is not None:
                own(module, "bias")[index] = source.bias.to(module.bias)[index]
    return reverted.eval()


@dataclass(frozen=True)
class ExportResult:
    """What ``export_suppressed`` wrote."""

    out_dir: str
    method: str
    n_neurons: int
    per_layer: dict[int, int]
    source_fingerprint: str
    suppressed_fingerprint: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def suppressed_model(model: nn.Module, neurons: NeuronSet, method: str, *, means: dict[int, Tensor] | None = None,
                     base: nn.Module | None = None) -> nn.Module:
    """The suppressed copy itself (nothing written); a peft adapter is merged into the copy first."""
    if method not in EXPORT_METHODS:
        raise ValueError(f"unknown export method {method!r}; choose one of {', '.join(EXPORT_METHODS)}")
    refuse_offloaded(model, f"exporting a suppressed model ({method})")  # before copying a model this large
    source = copy.deepcopy(model).merge_and_unload() if _is_peft(model) else unwrap_model(model)
    neurons.check_fits(layer_widths(source))
    if method == "mean":
        if means is None:
            raise ValueError("method 'mean' needs the neurons' means (interp.interventions.content_reference(...).means)")
        return fold_mean_ablation(source, neurons, means)
    if method == "revert":
        if base is None:
            raise ValueError("method 'revert' needs the base model the fine-tune started from")
        return revert_neurons(source, base, neurons)
    suppressed = sharing_copy(source)[0]
    for site in neuron_sites(suppressed, layers=neurons.layers):
        own(site.module, "weight")  # zero_neuron_weights edits in place; the source must not change
    zero_neuron_weights(suppressed, neurons)
    return suppressed.eval()


def export_suppressed(
    model: nn.Module,
    neurons: NeuronSet,
    out_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase,
    method: str = "mean",
    means: dict[int, Tensor] | None = None,
    base: nn.Module | None = None,
    source_spec: str | None = None,
    extra_provenance: dict | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write the suppressed model (``suppressed_model``) as a HF folder, atomically, with provenance."""
    final = Path(out_dir)
    refuse_existing(final, overwrite, folder=True)
    suppressed = suppressed_model(model, neurons, method, means=means, base=base)
    result = ExportResult(str(final), method, len(neurons), neurons.counts(), weights_fingerprint(model),
                          weights_fingerprint(suppressed))
    provenance = {
        "kind": "neurodiff.suppressed/2",
        "method": {"mean": "mean ablation folded into the output projection's bias (column zeroed)",
                   "revert": "the neurons' input rows and output column reverted to the base model's weights",
                   "zero": "the output projection's input columns zeroed (zero ablation)"}[method],
        "source_spec": source_spec,
        "neurons": neurons.to_list(),
        **result.to_dict(),
        "package_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra_provenance or {}),
    }
    build = temporary_dir_beside(final)
    try:
        suppressed.save_pretrained(build, safe_serialization=True, max_shard_size=SHARD_SIZE)
        tokenizer.save_pretrained(build)
        write_json_atomic(build / PROVENANCE_FILE, provenance, default=str)
        publish_dir(build, final, overwrite)
    finally:
        if build.exists():
            import shutil

            shutil.rmtree(build, ignore_errors=True)
    log.info("wrote %s: %d neurons suppressed (%s) in %d layers", final, len(neurons), method, len(result.per_layer))
    return result


@dataclass(frozen=True)
class ExportCheck:
    """Suppressed weights vs the hook intervention on the same inputs."""

    method: str
    max_abs_logit_diff: float
    logits_allclose: bool
    generations_equal: bool
    atol: float

    @property
    def ok(self) -> bool:
        return self.logits_allclose and self.generations_equal

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ok": self.ok}


@torch.no_grad()
def check_export(
    model: nn.Module, suppressed: nn.Module, neurons: NeuronSet, input_ids: Tensor, attention_mask: Tensor | None = None,
    *, method: str = "zero", means: dict[int, Tensor] | None = None, max_new_tokens: int = 8,
    pad_token_id: int | None = None, atol: float = 1e-5,
) -> ExportCheck:
    """Compare ``suppressed`` with ``model`` under the equivalent hook (zero or mean ablation at every
    position): logits, then greedy generations. For generation pass left-padded prompts."""
    if method not in ("zero", "mean"):
        raise ValueError(f"method {method!r} has no hook equivalent to check against; check 'zero' or 'mean' exports")

    def hooked():
        return ablate(model, neurons, method, means if method == "mean" else None)

    with hooked():
        hooked_logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    weight_logits = suppressed(input_ids=input_ids, attention_mask=attention_mask).logits
    diff = float((hooked_logits - weight_logits.to(hooked_logits.dtype)).abs().max())
    generations_equal = True
    if max_new_tokens > 0:
        kwargs = dict(attention_mask=attention_mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_token_id)
        with hooked():
            hooked_tokens = model.generate(input_ids, **kwargs)
        weight_tokens = suppressed.generate(input_ids, **kwargs)
        generations_equal = hooked_tokens.shape == weight_tokens.shape and bool((hooked_tokens == weight_tokens).all())
    return ExportCheck(method, diff, diff <= atol, generations_equal, atol)
