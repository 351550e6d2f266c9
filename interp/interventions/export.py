"""Suppress neurons for real: a saved HF model whose weights no longer read them.

A neuron ``i`` of layer ``L`` reaches the rest of the model only through column ``i`` of that
layer's output projection (``down_proj.weight[:, i]`` for ``nn.Linear``, which stores
``(out, in)``; row ``i`` of GPT-2's ``Conv1D`` ``c_proj.weight``, which stores ``(in, out)``).
Zeroing it gives exactly the same function as zero-ablating the neuron with a hook (the bias is
not per-input, so it stays), and the result loads anywhere without this package.
``check_export`` proves that on given inputs: logits and greedy generations.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from activations.models import weights_fingerprint
from activations.sites import neuron_sites
from interp import __version__
from interp.interventions.edits import ablate
from interp.interventions.neuron_set import NeuronSet, layer_widths

log = logging.getLogger(__name__)

PROVENANCE_FILE = "neurodiff_suppression.json"


def _is_peft(model: nn.Module) -> bool:
    return callable(getattr(model, "merge_and_unload", None)) and callable(getattr(model, "get_base_model", None))


@torch.no_grad()
def zero_neuron_weights(model: nn.Module, neurons: NeuronSet) -> None:
    """In place: zero the output-projection inputs that read ``neurons`` (plain, unwrapped models)."""
    if _is_peft(model):
        raise ValueError("the model is peft-wrapped: zeroing the base weights would leave the LoRA path reading the "
                         "neurons; use suppressed_copy (it merges the adapter into a copy first)")
    neurons.check_fits(layer_widths(model))
    index_by_layer = neurons.by_layer()
    for site in neuron_sites(model, layers=neurons.layers):
        weight = getattr(site.module, "weight", None)
        if not isinstance(weight, nn.Parameter) or not weight.dtype.is_floating_point:
            raise ValueError(
                f"{site.name}: output projection {type(site.module).__name__} has no plain float weight "
                "(quantized?); load the model in float32/bfloat16 to export a suppressed copy"
            )
        index = index_by_layer[site.layer].to(weight.device)
        if type(site.module).__name__ == "Conv1D":  # GPT-2 stores (in, out)
            weight[index, :] = 0
        else:  # nn.Linear stores (out, in)
            weight[:, index] = 0


def suppressed_copy(model: nn.Module, neurons: NeuronSet) -> nn.Module:
    """A deep copy of ``model`` with ``neurons`` removed; a peft adapter is merged into the copy first."""
    clone = copy.deepcopy(model)
    if _is_peft(clone):
        log.info("merging the peft adapter into a copy before zeroing weights")
        clone = clone.merge_and_unload()
    zero_neuron_weights(clone, neurons)
    return clone.eval()


def _publish_dir(build: Path, final: Path, overwrite: bool) -> None:
    """Move a finished folder into place in one rename (the old one, if any, only after success)."""
    if final.exists():
        if not overwrite:
            raise FileExistsError(f"{final} exists; pass overwrite=True (--overwrite) to replace it")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(build, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(build, final)


@dataclass(frozen=True)
class ExportResult:
    """What ``export_suppressed`` wrote."""

    out_dir: str
    n_neurons: int
    per_layer: dict[int, int]
    source_fingerprint: str
    suppressed_fingerprint: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def export_suppressed(
    model: nn.Module,
    neurons: NeuronSet,
    out_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase,
    source_spec: str | None = None,
    extra_provenance: dict | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write a loadable HF model (safetensors + tokenizer + provenance JSON) without ``neurons``.

    ``model`` is left untouched (the edit happens on a copy). A peft-wrapped model is merged
    into the copy first and the provenance says so.
    """
    final = Path(out_dir)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True (--overwrite) to replace it")
    suppressed = suppressed_copy(model, neurons)
    result = ExportResult(
        out_dir=str(final),
        n_neurons=len(neurons),
        per_layer=neurons.counts(),
        source_fingerprint=weights_fingerprint(model),
        suppressed_fingerprint=weights_fingerprint(suppressed),
    )
    provenance = {
        "kind": "neurodiff.suppressed/1",
        "method": "zeroed input columns of each MLP output projection (equals hook zero-ablation)",
        "source_spec": source_spec,
        "merged_peft_adapter": _is_peft(model),
        "neurons": neurons.to_list(),
        **result.to_dict(),
        "package_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra_provenance or {}),
    }
    final.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        suppressed.save_pretrained(build, safe_serialization=True)
        tokenizer.save_pretrained(build)
        (build / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
        _publish_dir(build, final, overwrite)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    log.info("wrote %s: %d neurons suppressed in %d layers", final, len(neurons), len(result.per_layer))
    return result


@dataclass(frozen=True)
class ExportCheck:
    """Suppressed weights vs hook zero-ablation on the same inputs."""

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
    model: nn.Module,
    suppressed: nn.Module,
    neurons: NeuronSet,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    max_new_tokens: int = 8,
    pad_token_id: int | None = None,
    atol: float = 1e-5,
) -> ExportCheck:
    """Compare ``suppressed`` with ``model`` under ``ablate(mode="zero")``: logits, then greedy text.

    For generation pass left-padded prompts (or a single prompt).
    """
    with ablate(model, neurons, "zero"):
        hooked_logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    weight_logits = suppressed(input_ids=input_ids, attention_mask=attention_mask).logits
    diff = float((hooked_logits - weight_logits.to(hooked_logits.dtype)).abs().max())
    generations_equal = True
    if max_new_tokens > 0:
        kwargs = dict(attention_mask=attention_mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_token_id)
        with ablate(model, neurons, "zero"):
            hooked_tokens = model.generate(input_ids, **kwargs)
        weight_tokens = suppressed.generate(input_ids, **kwargs)
        generations_equal = hooked_tokens.shape == weight_tokens.shape and bool((hooked_tokens == weight_tokens).all())
    return ExportCheck(diff, diff <= atol, generations_equal, atol)


CHECK_FILE = "suppression_check.json"


def export_and_check(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: NeuronSet,
    out_dir: str | Path,
    *,
    check_prompts: list[str] | tuple[str, ...] = (),
    max_new_tokens: int = 16,
    source_spec: str | None = None,
    overwrite: bool = False,
) -> tuple[ExportResult, ExportCheck | None]:
    """``export_suppressed``, then reload the folder from disk and ``check_export`` it against hook
    zero-ablation on ``check_prompts`` (chat-templated user turns); the check goes to ``CHECK_FILE``."""
    from activations.prompt_sets import apply_template  # local: keeps export usable without prompt sets

    result = export_suppressed(model, neurons, out_dir, tokenizer=tokenizer, source_spec=source_spec, overwrite=overwrite)
    if not check_prompts:
        return result, None
    parameter = next(model.parameters())
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=parameter.dtype, local_files_only=True)
    reloaded = reloaded.to(parameter.device).eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation needs left padding; restored for other callers
    try:
        encoded = tokenizer([apply_template(tokenizer, p, "user") for p in check_prompts],
                            return_tensors="pt", padding=True, add_special_tokens=False).to(parameter.device)
    finally:
        tokenizer.padding_side = side
    # bfloat16 logits carry ~1e-2 rounding; float32 must agree to 1e-4
    atol = 1e-4 if parameter.dtype == torch.float32 else 5e-2
    check = check_export(model, reloaded, neurons, encoded.input_ids, encoded.attention_mask,
                         max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, atol=atol)
    (Path(out_dir) / f".{CHECK_FILE}.tmp").write_text(json.dumps(check.to_dict(), indent=2))
    os.replace(Path(out_dir) / f".{CHECK_FILE}.tmp", Path(out_dir) / CHECK_FILE)
    if not check.ok:
        log.warning("suppressed export differs from hook ablation: %s", check)
    return result, check
