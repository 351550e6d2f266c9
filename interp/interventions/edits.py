"""Interventions on chosen MLP neurons: ``ablate``, ``patch`` and ``scale`` context managers.

Each is a thin layer over ``activations.hooks.hooked``: on enter it hooks the neuron sites of the
layers the ``NeuronSet`` touches, on exit (also on exceptions) the hooks are gone. The hook edits
only the chosen neurons, at every position of every forward pass inside the block: a plain
forward, and each step of ``model.generate`` with a KV cache (the cached keys/values of earlier
positions were computed under the same edit). Edits build a new tensor (``index_copy`` /
``index_fill``) instead of writing in place, so autograd through them works and the other neurons'
values are bit-identical to the unedited run.

Mixture-of-experts models: name an expert's site (``"blocks.0.mlp.experts.1.hook_post"``, or a
mapping such names -> indices; reference values keyed by the same names); the edit then acts on the
tokens the router sent to that expert (``activations.experts``).

Reference values (``mean`` and ``resample`` ablation, ``patch``) are moved to the activation's
device and dtype inside the hook, explicitly, because a reference recorded in float32 on CPU must
work on a bfloat16 model on GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from activations.experts import is_expert_site, sites_named
from activations.hooks import NeuronFn, hooked
from activations.sites import neuron_sites
from interp.interventions.neuron_set import NeuronSet, as_neuron_set, layer_widths

AblationMode = Literal["zero", "mean", "resample"]
ABLATION_MODES: tuple[str, ...] = ("zero", "mean", "resample")

LayerValues = Mapping[int, Tensor | np.ndarray]
"""Per layer, neuron values: ``(d_mlp,)`` constants, ``(batch, pos, d_mlp)`` recordings, or
``(n_tokens, d_mlp)`` donor pools, depending on the intervention."""


def _as_tensor(values: Tensor | np.ndarray) -> Tensor:
    return values if isinstance(values, Tensor) else torch.from_numpy(np.asarray(values))


def _pick(values: LayerValues | Tensor | np.ndarray, layer: int, what: str) -> Tensor:
    """Layer ``layer``'s entry of a mapping, or row ``layer`` of a ``(n_layers, ...)`` array."""
    if isinstance(layer, str) and not isinstance(values, Mapping):
        raise ValueError(f"{what} for expert site {layer} must be a mapping from site name to values")
    if isinstance(values, Mapping):
        if layer not in values:
            raise ValueError(f"{what} has no values for layer {layer} (has layers {sorted(values)})")
        return _as_tensor(values[layer])
    array = _as_tensor(values)
    if array.shape[0] <= layer:
        raise ValueError(f"{what} has {array.shape[0]} layer rows; layer {layer} needs a row (index by layer number)")
    return array[layer]


def _check_width(tensor: Tensor, width: int, layer: int, what: str) -> None:
    if tensor.shape[-1] != width:
        raise ValueError(f"{what} for layer {layer} has last dim {tensor.shape[-1]} but the layer has {width} neurons")


def _set_constant(index: Tensor, constant: Float[Tensor, " d_mlp"]) -> NeuronFn:
    def fn(acts: Tensor) -> Tensor:
        idx = index.to(acts.device)
        chosen = constant.to(device=acts.device, dtype=acts.dtype)[idx]
        return acts.index_copy(-1, idx, chosen.expand(*acts.shape[:-1], len(idx)))

    return fn


def _zero(index: Tensor) -> NeuronFn:
    def fn(acts: Tensor) -> Tensor:
        return acts.index_fill(-1, index.to(acts.device), 0.0)

    return fn


def _scale(index: Tensor, factor: float) -> NeuronFn:
    def fn(acts: Tensor) -> Tensor:
        idx = index.to(acts.device)
        return acts.index_copy(-1, idx, acts.index_select(-1, idx) * factor)

    return fn


def _resample(index: Tensor, pool: Float[Tensor, "n_tokens d_mlp"], generator: torch.Generator) -> NeuronFn:
    # Each (row, position) takes the whole chosen-neuron vector of one donor token, so the chosen
    # neurons keep their joint distribution; see ``ablate`` for why tokens, not aligned positions.
    chosen_pool = pool[:, index]  # select once: a pool can hold many tokens x d_mlp

    def fn(acts: Tensor) -> Tensor:
        idx = index.to(acts.device)
        n_positions = int(np.prod(acts.shape[:-1]))
        rows = torch.randint(len(chosen_pool), (n_positions,), generator=generator)
        donor = chosen_pool[rows].to(device=acts.device, dtype=acts.dtype)
        return acts.index_copy(-1, idx, donor.reshape(*acts.shape[:-1], len(idx)))

    return fn


def _aligned(index: Tensor, recorded: Float[Tensor, "batch pos d_mlp"], layer: int) -> NeuronFn:
    def fn(acts: Tensor) -> Tensor:
        if acts.shape[:-1] != recorded.shape[:-1]:
            raise ValueError(
                f"layer {layer}: patch values were recorded for (batch, pos) = {tuple(recorded.shape[:-1])} but this "
                f"forward pass has {tuple(acts.shape[:-1])}. Position-aligned patching needs the same prompts with the "
                "same tokenisation and padding, in one forward pass; for generate() patch per-neuron constants "
                "(shape (d_mlp,), e.g. mean_activations(...))"
            )
        idx = index.to(acts.device)
        donor = recorded.index_select(-1, index).to(device=acts.device, dtype=acts.dtype)
        return acts.index_copy(-1, idx, donor)

    return fn


NeuronsLike = NeuronSet | str | int | Mapping | Iterable
"""A ``NeuronSet``, a site name or layer (with indices), a mapping site -> indices, or (layer, index) pairs."""
ExpertNeurons = dict[str, Tensor]
"""Site name -> sorted neuron indices, for expert and shared-expert sites (no ``(layer, index)`` form)."""


def _selection(neurons: NeuronsLike, indices: Iterable[int] | None) -> NeuronSet | ExpertNeurons:
    """``as_neuron_set``, except that expert site names give an ``ExpertNeurons``."""
    named = {neurons: indices} if isinstance(neurons, str) else neurons if isinstance(neurons, Mapping) else {}
    if not any(is_expert_site(site) for site in named):
        return as_neuron_set(neurons, indices)
    selection = {}
    for site, ids in named.items():
        if ids is None:
            raise ValueError(f"site {site!r} needs the indices of its neurons, e.g. ablate(model, {site!r}, [0, 3])")
        ids = [int(i) for i in ids]
        if len(set(ids)) != len(ids) or min(ids, default=0) < 0:
            raise ValueError(f"{site}: neuron indices {ids} must be non-negative and listed once each")
        selection[str(site).strip()] = torch.tensor(sorted(ids), dtype=torch.long)
    return selection


def _module(model) -> nn.Module:
    return getattr(model, "model", model) if not isinstance(model, nn.Module) else model


@contextmanager
def _edited(model: nn.Module, neurons: NeuronSet | ExpertNeurons,
            make_fn: Callable[[int | str, Tensor, int], NeuronFn]) -> Iterator[None]:
    """Hook the sites of ``neurons``' layers with ``make_fn(layer, index, d_mlp)`` for the block (for
    expert sites, ``make_fn(site name, index, d_expert)``)."""
    model = _module(model)
    if len(neurons) == 0:  # an empty set is a valid no-op (e.g. k capped to 0 in a layer filter)
        yield
        return
    if isinstance(neurons, dict):
        sites = sites_named(model, list(neurons))
        too_big = [(site.name, int(neurons[site.name].max())) for site in sites if neurons[site.name].max() >= site.d_mlp]
        if too_big:
            raise ValueError(f"neuron index out of range at {too_big[0][0]}: {too_big[0][1]} (it has "
                             f"{next(s.d_mlp for s in sites if s.name == too_big[0][0])} neurons)")
        hooks = [(site, make_fn(site.key, neurons[site.name], site.d_mlp)) for site in sites]
        with hooked(hooks):
            yield
        return
    neurons.check_fits(layer_widths(model))
    index_by_layer = neurons.by_layer()
    sites = neuron_sites(model, layers=neurons.layers)
    hooks = [(site, make_fn(site.layer, index_by_layer[site.layer], site.d_mlp)) for site in sites]
    with hooked(hooks):
        yield


@contextmanager
def ablate(
    model: nn.Module,
    neurons: NeuronsLike,
    mode: AblationMode | Iterable[int] = "zero",
    reference: LayerValues | Tensor | np.ndarray | None = None,
    *,
    indices: Iterable[int] | None = None,
    seed: int = 0,
) -> Iterator[None]:
    """Knock out ``neurons`` for every forward pass inside the block.

    Neurons can be named by site, as in ``with ablate(model, "blocks.29.mlp.hook_post", [12, 40]):``
    (a list after a site name is its indices; the mode is then a keyword), by a ``NeuronSet``, by a
    mapping site -> indices or by ``(layer, index)`` pairs. ``model`` may be a ``LoadedModel``.

    ``mode``:
      ``zero``      the neurons read 0 (equals removing their output-projection weights).
      ``mean``      the neurons read a per-neuron constant: ``reference`` maps layer -> ``(d_mlp,)``
                    means (or is an ``(n_layers, d_mlp)`` array indexed by layer), e.g. from
                    ``mean_activations`` or ``mean_reference_from_cache``.
      ``resample``  each (row, position) reads the chosen neurons' values at a token drawn uniformly
                    (``seed``-ed, fresh each forward) from a donor pool: ``reference`` maps layer ->
                    ``(n_tokens, d_mlp)``, recorded on *other* prompts (``token_pool``). Tokens, not
                    aligned positions, because prompts differ in length and ``generate`` produces
                    positions no donor has; a whole donor token is copied so the chosen neurons keep
                    their joint distribution.
    """
    if isinstance(neurons, (str, int)) and not isinstance(mode, str):
        indices, mode = mode, "zero"
    neurons = _selection(neurons, indices)
    if mode not in ABLATION_MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose one of {', '.join(ABLATION_MODES)}")
    if mode != "zero" and reference is None:
        raise ValueError(f"{mode} ablation needs reference values: per-layer means (mean) or a donor token pool (resample)")
    generator = torch.Generator().manual_seed(seed)

    def make(layer: int, index: Tensor, width: int) -> NeuronFn:
        if mode == "zero":
            return _zero(index)
        values = _pick(reference, layer, f"{mode} reference")  # type: ignore[arg-type]
        _check_width(values, width, layer, f"{mode} reference")
        if mode == "mean":
            if values.dim() != 1:
                raise ValueError(f"mean reference for layer {layer} must be (d_mlp,), got {tuple(values.shape)}")
            return _set_constant(index, values)
        if values.dim() != 2 or len(values) == 0:
            raise ValueError(f"resample pool for layer {layer} must be a non-empty (n_tokens, d_mlp), got {tuple(values.shape)}")
        return _resample(index, values, generator)

    with _edited(model, neurons, make):
        yield


@contextmanager
def patch(model: nn.Module, neurons: NeuronsLike, values: LayerValues, *, indices: Iterable[int] | None = None
          ) -> Iterator[None]:
    """Set ``neurons`` to given values for every forward pass inside the block.

    ``values[layer]`` is either ``(batch, pos, d_mlp)``, recorded from another model or prompt on
    exactly the same token ids (cross-model patching between base and merged works because they
    share architecture and tokenizer; the shape is checked on every forward), or ``(d_mlp,)``
    per-neuron constants broadcast to every position, which also works inside ``generate``.
    """

    neurons = _selection(neurons, indices)

    def make(layer: int, index: Tensor, width: int) -> NeuronFn:
        recorded = _pick(values, layer, "patch values")
        _check_width(recorded, width, layer, "patch values")
        if recorded.dim() == 1:
            return _set_constant(index, recorded)
        if recorded.dim() != 3:
            raise ValueError(f"patch values for layer {layer} must be (batch, pos, d_mlp) or (d_mlp,), got {tuple(recorded.shape)}")
        return _aligned(index, recorded, layer)

    with _edited(model, neurons, make):
        yield


@contextmanager
def scale(model: nn.Module, neurons: NeuronsLike, factor: float, *, indices: Iterable[int] | None = None
          ) -> Iterator[None]:
    """Multiply ``neurons`` by ``factor`` (steering: > 1 amplifies, 0 equals zero ablation)."""
    neurons = _selection(neurons, indices)
    if not np.isfinite(factor):
        raise ValueError(f"scale factor must be finite, got {factor}")
    with _edited(model, neurons, lambda layer, index, width: _scale(index, float(factor))):
        yield
