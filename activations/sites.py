"""MLP neuron sites: where each layer's neuron vector can be read and written.

A neuron vector is the *input* of the MLP's output projection: act(gate(x)) * up(x) for gated MLPs
(Llama, Mistral, Qwen, Gemma, Phi-3), act(fc(x)) for plain ones (GPT-2, GPT-NeoX, Phi). That is
TransformerLens' ``blocks.{L}.mlp.hook_post``, and these sites carry the same names so habits
carry over. Hooks on a site are forward *pre*-hooks of the output projection, which keeps working
when peft wraps the projection in a LoRA layer or bitsandbytes swaps it for ``Linear4bit``.

An architecture is one row in ``ARCHITECTURES``. A model type without a row is inferred from its
structure (``infer_spec``): the list of decoder blocks, and in each block the MLP's output
projection, the one linear layer that maps the configured intermediate size back to the hidden
size. Where that is ambiguous or absent (mixture-of-experts, unusual layouts) the error says which
row to add.

Two layouts need more than a pre-hook on a projection, and say so in their row's ``kind``:

  ``flat``     OPT flattens (batch, pos) into one axis before its MLP; the hooks restore
               ``(batch, pos, d_mlp)`` from the block's input (``activations.hooks``).
  ``experts``  a mixture-of-experts layer: each expert's neurons are a site of their own,
               ``blocks.{L}.mlp.experts.{E}.hook_post``, that only the tokens routed to it reach
               (``activations.experts``); a shared expert is an ordinary dense site.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Literal

from torch import nn

log = logging.getLogger(__name__)

SITE_TEMPLATE = "blocks.{layer}.mlp.hook_post"

SiteSource = Literal["table", "inferred"]
SiteKind = Literal["dense", "flat", "experts"]


@dataclass(frozen=True)
class ArchSpec:
    """Where one architecture keeps its layers and the output projection of each MLP."""

    layers: str
    """Dotted path from the bare causal-LM module to the list of transformer blocks."""
    out_proj: str
    """Dotted path from one block to the MLP's output projection (``experts``: to the experts module)."""
    kind: SiteKind = "dense"
    """``dense`` (the projection sees ``(batch, pos, d_mlp)``), ``flat`` (it sees ``(batch * pos, d_mlp)``
    rows) or ``experts`` (fused per-expert weights, see ``activations.experts``)."""
    shared: str | None = None
    """``experts`` only: dotted path from one block to a shared expert's output projection, if any."""


# model_type (from the HF config) -> paths, each checked against transformers' modeling_<type>.py
# (transformers 5.x). Gated and plain MLPs differ only in the projection name.
ARCHITECTURES: dict[str, ArchSpec] = {
    # Gated MLPs: down_proj(act(gate_proj(x)) * up_proj(x)); Phi-3 and GLM fuse gate and up.
    "llama": ArchSpec("model.layers", "mlp.down_proj"),
    "mistral": ArchSpec("model.layers", "mlp.down_proj"),
    "qwen2": ArchSpec("model.layers", "mlp.down_proj"),
    "qwen3": ArchSpec("model.layers", "mlp.down_proj"),
    "gemma": ArchSpec("model.layers", "mlp.down_proj"),
    "gemma2": ArchSpec("model.layers", "mlp.down_proj"),
    "gemma3_text": ArchSpec("model.layers", "mlp.down_proj"),
    "olmo": ArchSpec("model.layers", "mlp.down_proj"),
    "olmo2": ArchSpec("model.layers", "mlp.down_proj"),
    "olmo3": ArchSpec("model.layers", "mlp.down_proj"),
    "phi3": ArchSpec("model.layers", "mlp.down_proj"),
    "granite": ArchSpec("model.layers", "mlp.down_proj"),
    "cohere": ArchSpec("model.layers", "mlp.down_proj"),
    "cohere2": ArchSpec("model.layers", "mlp.down_proj"),
    "stablelm": ArchSpec("model.layers", "mlp.down_proj"),
    "smollm3": ArchSpec("model.layers", "mlp.down_proj"),
    "helium": ArchSpec("model.layers", "mlp.down_proj"),
    "exaone4": ArchSpec("model.layers", "mlp.down_proj"),
    "glm": ArchSpec("model.layers", "mlp.down_proj"),
    "glm4": ArchSpec("model.layers", "mlp.down_proj"),
    # Plain MLPs: out(act(in(x))).
    "nemotron": ArchSpec("model.layers", "mlp.down_proj"),
    "phi": ArchSpec("model.layers", "mlp.fc2"),
    "starcoder2": ArchSpec("model.layers", "mlp.c_proj"),
    "persimmon": ArchSpec("model.layers", "mlp.dense_4h_to_h"),
    "gpt2": ArchSpec("transformer.h", "mlp.c_proj"),
    "gpt_bigcode": ArchSpec("transformer.h", "mlp.c_proj"),
    "gpt_neo": ArchSpec("transformer.h", "mlp.c_proj"),
    "gptj": ArchSpec("transformer.h", "mlp.fc_out"),
    "codegen": ArchSpec("transformer.h", "mlp.fc_out"),
    "falcon": ArchSpec("transformer.h", "mlp.dense_4h_to_h"),
    "bloom": ArchSpec("transformer.h", "mlp.dense_4h_to_h"),
    "mpt": ArchSpec("transformer.blocks", "ffn.down_proj"),
    "gpt_neox": ArchSpec("gpt_neox.layers", "mlp.dense_4h_to_h"),
    # Flattened rows: fc2(act(fc1(final_layer_norm(x)))) on (batch * pos, d) inside the block.
    "opt": ArchSpec("model.decoder.layers", "fc2", "flat"),
    # Mixture of experts with fused weights: experts.gate_up_proj (E, 2 d, H), experts.down_proj (E, H, d).
    "mixtral": ArchSpec("model.layers", "mlp.experts", "experts"),
    "olmoe": ArchSpec("model.layers", "mlp.experts", "experts"),
    "qwen3_moe": ArchSpec("model.layers", "mlp.experts", "experts"),
    "qwen2_moe": ArchSpec("model.layers", "mlp.experts", "experts", shared="mlp.shared_expert.down_proj"),
}


# model_type -> why inference would get its sites wrong (it has a row; these apply without one).
NOT_INFERABLE: dict[str, str] = {
    "opt": "OPT flattens (batch, pos) into one axis before its MLP, which its structure does not show; "
    "its row says kind='flat' so the hooks restore (batch, pos, d_mlp)",
}


class UnsupportedArchitectureError(ValueError):
    """The model's neuron sites are neither in ``ARCHITECTURES`` nor inferable from its structure."""


@dataclass(frozen=True)
class NeuronSite:
    """One layer's MLP neurons: hook ``module`` (the output projection) to read or set them."""

    layer: int
    name: str
    module: nn.Module
    d_mlp: int
    block: nn.Module | None = None
    """For ``flat`` and ``experts`` sites, the module whose input is ``(batch, pos, hidden)``: the hooks
    read the (batch, pos) shape there, because ``module`` only sees flattened rows."""
    expert: int | None = None
    """The expert's index for an ``experts`` site (``module`` is then the layer's experts module)."""

    @property
    def key(self) -> int | str:
        """What recordings are keyed by: the layer for a layer's dense site, else the site's name."""
        return self.layer if self.name == SITE_TEMPLATE.format(layer=self.layer) else self.name

    @property
    def order(self) -> tuple[int, int]:
        """Forward order within a model: by layer, a shared expert before the routed ones, experts ascending."""
        return self.layer, -1 if self.expert is None else self.expert


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare causal LM under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _resolve(root: nn.Module, dotted: str) -> nn.Module:
    module = root
    for part in dotted.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def _try_resolve(root: nn.Module, dotted: str) -> nn.Module:
    try:
        return _resolve(root, dotted)
    except (AttributeError, IndexError):
        return nn.Identity()  # no widths: reported as missing by the caller


def _widths(module: nn.Module) -> tuple[int, int] | None:
    """(input width, output width) of a linear-like module; None for anything else."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):  # Linear, Linear4bit, lora
        return int(module.in_features), int(module.out_features)
    weight = getattr(module, "weight", None)
    if weight is not None and type(module).__name__ == "Conv1D":  # GPT-2 stores (in, out)
        return int(weight.shape[0]), int(weight.shape[1])
    return None


def _in_features(module: nn.Module) -> int:
    widths = _widths(module)
    if widths is None:
        raise UnsupportedArchitectureError(f"cannot tell the input width of {type(module).__name__}")
    return widths[0]


def _model_type(bare: nn.Module) -> str:
    return str(getattr(getattr(bare, "config", None), "model_type", None) or "")


def _spec(bare: nn.Module) -> ArchSpec:
    """The table's row for the model type, else the spec inferred from the model's structure."""
    spec = ARCHITECTURES.get(_model_type(bare))
    return spec if spec is not None else infer_spec(bare)


def site_source(model: nn.Module) -> SiteSource:
    """Whether the model's sites come from a row of ``ARCHITECTURES`` or from ``infer_spec``."""
    bare = unwrap_model(model)
    _spec(bare)  # raises if the sites cannot be found, rather than claim a source that fails
    return "table" if _model_type(bare) in ARCHITECTURES else "inferred"


# ---- structural inference -------------------------------------------------------------------

_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_MLP_WIDTH_KEYS = ("intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim")
_MLP_PARTS = ("mlp", "ffn", "feed_forward", "fc")
_ATTENTION_PARTS = ("attn", "attention")
_MOE_PARTS = ("expert", "router")
_MOE_CLASSES = ("expert", "router", "sparsemoe", "moeblock")


def _config_int(config: object, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _mlp_width(config: object, hidden: int) -> int:
    width = _config_int(config, _MLP_WIDTH_KEYS)
    # GPT-2-style configs leave n_inner None to mean 4 * hidden; BLOOM and MPT hard-code 4 * hidden.
    return 4 * hidden if width is None else width


def _block_lists(bare: nn.Module, n_layers: int) -> list[tuple[str, nn.ModuleList]]:
    return [(name, module) for name, module in bare.named_modules()
            if isinstance(module, nn.ModuleList) and len(module) == n_layers]


def _parts(dotted: str) -> list[str]:
    return dotted.lower().split(".")


def _moe_module(blocks: nn.ModuleList) -> str | None:
    """The first mixture-of-experts module in any block ("3.mlp.experts (MixtralExperts)"), or None."""
    for index, block in enumerate(blocks):
        for name, module in block.named_modules():
            cls = type(module).__name__
            if any(tag in part for part in _parts(name) for tag in _MOE_PARTS) or any(
                    tag in cls.lower() for tag in _MOE_CLASSES):
                return f"{index}.{name} ({cls})"
    return None


def _out_projections(block: nn.Module, width: int, hidden: int) -> list[str]:
    """Paths in ``block`` of linear layers mapping ``width`` to ``hidden``, outside attention."""
    found = [name for name, module in block.named_modules()
             if name and _widths(module) == (width, hidden)
             and not any(tag in part for part in _parts(name) for tag in _ATTENTION_PARTS)]
    # peft's lora.Linear holds the Linear it wraps (``base_layer``): hook the wrapper, as the table does.
    outer = [name for name in found if not any(name.startswith(other + ".") for other in found)]
    named_mlp = [name for name in outer if any(tag in part for part in _parts(name) for tag in _MLP_PARTS)]
    return named_mlp if len(outer) > 1 and named_mlp else outer


def _cannot_infer(bare: nn.Module, problem: str, layers_hint: str = "model.layers") -> UnsupportedArchitectureError:
    model_type = _model_type(bare)
    return UnsupportedArchitectureError(
        f"no MLP neuron sites for {type(bare).__name__} (model_type={model_type!r}): it has no row in "
        f"activations.sites.ARCHITECTURES and inference failed: {problem}. If the model has a dense MLP, "
        "add a row naming the block list (dotted path from the bare causal LM) and the MLP output "
        f"projection (dotted path from one block), e.g. ARCHITECTURES[{model_type!r}] = "
        f"ArchSpec({layers_hint!r}, 'mlp.down_proj'); `print(model)` shows both. A mixture-of-experts "
        "model whose experts module keeps fused weights like Mixtral's (gate_up_proj (E, 2 d, H), down_proj "
        f"(E, H, d)) takes ArchSpec({layers_hint!r}, 'mlp.experts', 'experts'). "
        f"Rows exist for: {', '.join(sorted(ARCHITECTURES))}."
    )


def infer_spec(model: nn.Module) -> ArchSpec:
    """Find the block list and the MLP output projection from the model's structure and config.

    The blocks are the ``nn.ModuleList`` with one entry per configured layer; the projection is the
    one linear layer (outside attention) of block 0 with input width = the configured intermediate
    size and output width = the hidden size, and every block must have it at the same path.
    """
    bare = unwrap_model(model)
    if _model_type(bare) in NOT_INFERABLE:
        raise _cannot_infer(bare, NOT_INFERABLE[_model_type(bare)])
    config = getattr(bare, "config", None)
    if config is None:
        raise _cannot_infer(bare, "the module has no Hugging Face config to read layer and MLP sizes from")
    if hasattr(config, "get_text_config"):  # multimodal wrappers keep the LM's sizes in text_config
        config = config.get_text_config(decoder=True)
    n_layers = _config_int(config, _LAYER_COUNT_KEYS)
    hidden = _config_int(config, ("hidden_size", "n_embd", "d_model"))
    if n_layers is None or hidden is None:
        raise _cannot_infer(bare, "its config names no layer count or hidden size")
    width = _mlp_width(config, hidden)
    lists = _block_lists(bare, n_layers)
    if not lists:
        raise _cannot_infer(bare, f"no nn.ModuleList holds its {n_layers} layers")
    found: list[ArchSpec] = []
    for path, blocks in lists:
        moe = _moe_module(blocks)
        if moe is not None:
            raise _cannot_infer(bare, f"{path}.{moe} is a mixture-of-experts layer: a token's neurons live in "
                                      "the experts it was routed to, so there is no single neuron vector per layer",
                                path)
        found += [ArchSpec(path, name) for name in _out_projections(blocks[0], width, hidden)]
    if len(found) != 1:
        what = ", ".join(f"{spec.layers}.0.{spec.out_proj}" for spec in found) or "none"
        hint = found[0].layers if found else lists[0][0]
        raise _cannot_infer(bare, f"expected one linear layer {width} -> {hidden} (intermediate -> hidden size) "
                                  f"in block 0 of {[path for path, _ in lists]}, found {len(found)}: {what}", hint)
    spec = found[0]
    missing = [index for index, block in enumerate(_resolve(bare, spec.layers))
               if _widths(_try_resolve(block, spec.out_proj)) is None]
    if missing:
        raise _cannot_infer(bare, f"blocks {missing} have no linear layer at {spec.out_proj}", spec.layers)
    _log_inferred(_model_type(bare), spec)
    return spec


@functools.cache
def _log_inferred(model_type: str, spec: ArchSpec) -> None:
    # Cached so a model whose sites are looked up thousands of times logs once, not every time.
    log.info("model_type=%r has no ARCHITECTURES row; inferred neuron sites at %s.{layer}.%s",
             model_type, spec.layers, spec.out_proj)


# ---- sites ----------------------------------------------------------------------------------

def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks, in order."""
    bare = unwrap_model(model)
    return _resolve(bare, _spec(bare).layers)


def neuron_sites(model: nn.Module, layers: list[int] | None = None) -> list[NeuronSite]:
    """The MLP neuron site of each layer (all layers, or the ``layers`` given, in that order)."""
    bare = unwrap_model(model)
    spec = _spec(bare)
    blocks = _resolve(bare, spec.layers)
    n_layers = len(blocks)
    chosen = list(range(n_layers)) if layers is None else list(layers)
    bad = [layer for layer in chosen if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    if spec.kind == "experts":
        from activations.experts import expert_sites  # it builds on this module

        return expert_sites(blocks, spec, chosen)
    sites = []
    for layer in chosen:
        module = _resolve(blocks[layer], spec.out_proj)
        block = blocks[layer] if spec.kind == "flat" else None
        sites.append(NeuronSite(layer, SITE_TEMPLATE.format(layer=layer), module, _in_features(module), block))
    return sites


def neuron_inventory(model: nn.Module) -> dict[str, int | str]:
    """A summary a person can read: architecture, layers, neurons per layer and in total."""
    sites = neuron_sites(model)
    widths = {site.d_mlp for site in sites}
    bare = unwrap_model(model)
    return {
        "architecture": type(bare).__name__,
        "model_type": bare.config.model_type,
        "n_layers": len(sites),
        "d_mlp": widths.pop() if len(widths) == 1 else -1,
        "n_neurons": sum(site.d_mlp for site in sites),
        "site": SITE_TEMPLATE,
        "site_source": site_source(model),
    }
