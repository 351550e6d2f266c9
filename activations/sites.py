"""MLP neuron sites: where each layer's neuron vector can be read and written.

A neuron vector is the *input* of the MLP's output projection: act(gate(x)) * up(x) for gated MLPs
(Llama, Mistral, Qwen, Gemma, Phi-3), act(fc(x)) for plain ones (GPT-2, GPT-NeoX, Phi). That is
TransformerLens' ``blocks.{L}.mlp.hook_post``, and these sites carry the same names so habits
carry over. Hooks on a site are forward *pre*-hooks of the output projection, which keeps working
when peft wraps the projection in a LoRA layer or bitsandbytes swaps it for ``Linear4bit``.

Adding an architecture is one row in ``ARCHITECTURES``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

SITE_TEMPLATE = "blocks.{layer}.mlp.hook_post"


@dataclass(frozen=True)
class ArchSpec:
    """Where one architecture keeps its layers and the output projection of each MLP."""

    layers: str
    """Dotted path from the bare causal-LM module to the list of transformer blocks."""
    out_proj: str
    """Dotted path from one block to the MLP's output projection."""


# model_type (from the HF config) -> paths. Gated and plain MLPs differ only in the projection name.
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("model.layers", "mlp.down_proj"),
    "mistral": ArchSpec("model.layers", "mlp.down_proj"),
    "qwen2": ArchSpec("model.layers", "mlp.down_proj"),
    "qwen3": ArchSpec("model.layers", "mlp.down_proj"),
    "gemma": ArchSpec("model.layers", "mlp.down_proj"),
    "gemma2": ArchSpec("model.layers", "mlp.down_proj"),
    "gemma3_text": ArchSpec("model.layers", "mlp.down_proj"),
    "olmo": ArchSpec("model.layers", "mlp.down_proj"),
    "olmo2": ArchSpec("model.layers", "mlp.down_proj"),
    "phi3": ArchSpec("model.layers", "mlp.down_proj"),
    "phi": ArchSpec("model.layers", "mlp.fc2"),
    "gpt2": ArchSpec("transformer.h", "mlp.c_proj"),
    "gpt_neox": ArchSpec("gpt_neox.layers", "mlp.dense_4h_to_h"),
}


class UnsupportedArchitectureError(ValueError):
    """The model's architecture has no row in ``ARCHITECTURES``."""


@dataclass(frozen=True)
class NeuronSite:
    """One layer's MLP neurons: hook ``module`` (the output projection) to read or set them."""

    layer: int
    name: str
    module: nn.Module
    d_mlp: int


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare causal LM under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _resolve(root: nn.Module, dotted: str) -> nn.Module:
    module = root
    for part in dotted.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def _in_features(module: nn.Module) -> int:
    if hasattr(module, "in_features"):  # nn.Linear, bnb Linear4bit, peft lora.Linear
        return int(module.in_features)
    weight = getattr(module, "weight", None)
    if weight is not None and type(module).__name__ == "Conv1D":  # GPT-2 stores (in, out)
        return int(weight.shape[0])
    raise UnsupportedArchitectureError(f"cannot tell the input width of {type(module).__name__}")


def _spec(bare: nn.Module) -> ArchSpec:
    model_type = getattr(getattr(bare, "config", None), "model_type", None)
    spec = ARCHITECTURES.get(model_type or "")
    if spec is None:
        raise UnsupportedArchitectureError(
            f"no MLP neuron sites known for {type(bare).__name__} (model_type={model_type!r}); "
            f"supported: {', '.join(sorted(ARCHITECTURES))}. Add a row to "
            "activations.sites.ARCHITECTURES naming its layer list and MLP output projection."
        )
    return spec


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks, in order."""
    bare = unwrap_model(model)
    return _resolve(bare, _spec(bare).layers)


def neuron_sites(model: nn.Module, layers: list[int] | None = None) -> list[NeuronSite]:
    """The MLP neuron site of each layer (all layers, or the ``layers`` given, in that order)."""
    spec = _spec(unwrap_model(model))
    blocks = decoder_blocks(model)
    n_layers = len(blocks)
    chosen = list(range(n_layers)) if layers is None else list(layers)
    bad = [layer for layer in chosen if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    sites = []
    for layer in chosen:
        module = _resolve(blocks[layer], spec.out_proj)
        sites.append(NeuronSite(layer, SITE_TEMPLATE.format(layer=layer), module, _in_features(module)))
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
    }
