"""Steering: add to a model's activations while it runs, one addition per stacked copy of the batch.

Two places to add, both as context managers (hooks removed on exit, even when the body raises):

- ``shifted``: add a vector to a layer's MLP neurons (``shifts[g][layer]``, ``(d_mlp,)``), e.g. a
  neuron set moved by the mean difference between two models. A neuron's output projection is
  linear, so the shift writes ``output_vectors(model, shift)`` into the residual stream.
- ``steered``: add a vector to the residual stream at the output of a decoder block
  (``vectors[g][layer]``, ``(d_model,)``), e.g. a difference-of-means direction.

And one place to take away: ``projected_out`` removes the component along a direction from a
block's output (directional ablation), the same for every row.

With G additions, every forward pass inside the block must see a batch of G stacked copies of the
same rows (copy g = rows ``g * n : (g + 1) * n``), as ``activations.sampling.sample_replies`` builds
with ``copies=G``: G conditions then share one pass (the weights are read once for all of them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor, nn

from activations.hooks import NeuronFn, hooked
from activations.sites import decoder_blocks, neuron_sites
from interp.interventions.export import _column, _plain_weight

LayerVectors = Mapping[int, Tensor]
"""One vector per layer: ``(d_mlp,)`` neuron shifts or ``(d_model,)`` residual additions."""


def _per_copy(additions: Sequence[LayerVectors], layer: int, width: int) -> Tensor:
    """``(G, width)``: each copy's addition at ``layer`` (zero where a copy adds nothing there)."""
    rows = torch.zeros(len(additions), width)
    for g, by_layer in enumerate(additions):
        if layer in by_layer:
            vector = by_layer[layer].detach().float().cpu()
            if vector.shape != (width,):
                raise ValueError(f"layer {layer}: copy {g}'s addition has shape {tuple(vector.shape)}, "
                                 f"the layer needs ({width},)")
            rows[g] = vector
    return rows


def _add_per_copy(rows: Tensor, what: str) -> Callable[[Tensor], Tensor]:
    n_copies = rows.shape[0]

    def add(hidden: Tensor) -> Tensor:
        if hidden.shape[0] % n_copies:
            raise ValueError(f"{what}: {n_copies} additions need a batch of {n_copies} stacked copies, but the batch "
                             f"has {hidden.shape[0]} rows; repeat the inputs (sample_replies(..., copies={n_copies}))")
        per_row = rows.to(hidden).repeat_interleave(hidden.shape[0] // n_copies, dim=0)  # (batch, width)
        return hidden + per_row[:, None, :]

    return add


@contextmanager
def shifted(model: nn.Module, shifts: Sequence[LayerVectors]) -> Iterator[None]:
    """Copy g adds ``shifts[g][layer]`` to the MLP neurons of ``layer`` (module docstring)."""
    if not shifts:
        raise ValueError("steering needs at least one addition (one per stacked copy)")
    layers = sorted({layer for by_layer in shifts for layer in by_layer})
    hooks: list[tuple[object, NeuronFn]] = [
        (site, _add_per_copy(_per_copy(shifts, site.layer, site.d_mlp), f"layer {site.layer} neurons"))
        for site in neuron_sites(model, layers=layers)]
    with hooked(hooks):
        yield


@contextmanager
def steered(model: nn.Module, vectors: Sequence[LayerVectors]) -> Iterator[None]:
    """Copy g adds ``vectors[g][layer]`` to the output of decoder block ``layer`` (module docstring)."""
    if not vectors:
        raise ValueError("steering needs at least one addition (one per stacked copy)")
    blocks = decoder_blocks(model)
    layers = sorted({layer for by_layer in vectors for layer in by_layer})
    if layers and not 0 <= layers[0] <= layers[-1] < len(blocks):
        raise ValueError(f"steering layers {layers} out of range: the model has {len(blocks)} layers")
    handles = []

    def hook_for(layer: int):
        width = next(v for by_layer in vectors for key, v in by_layer.items() if key == layer).shape[-1]
        add = _add_per_copy(_per_copy(vectors, layer, width), f"block {layer}")

        def hook(module, args, output):
            if isinstance(output, tuple):
                return (add(output[0]), *output[1:])
            return add(output)

        return hook

    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(hook_for(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def projected_out(model: nn.Module, directions: LayerVectors) -> Iterator[None]:
    """The output of decoder block ``layer`` loses its component along ``directions[layer]``
    (``(d_model,)``, normalised here): ``h - (h . u) u`` at every position."""
    blocks = decoder_blocks(model)
    if not directions:
        raise ValueError("projected_out needs at least one layer's direction")
    if not all(0 <= layer < len(blocks) for layer in directions):
        raise ValueError(f"layers {sorted(directions)} out of range: the model has {len(blocks)} layers")
    handles = []

    def hook_for(direction: Tensor):
        unit = direction.detach().float() / direction.float().norm().clamp_min(1e-12)

        def project(hidden: Tensor) -> Tensor:
            u = unit.to(hidden)
            return hidden - (hidden @ u)[..., None] * u

        def hook(module, args, output):
            return (project(output[0]), *output[1:]) if isinstance(output, tuple) else project(output)

        return hook

    try:
        for layer, direction in sorted(directions.items()):
            handles.append(blocks[layer].register_forward_hook(hook_for(direction)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def output_vectors(model: nn.Module, shifts: LayerVectors) -> dict[int, Float[Tensor, " d_model"]]:
    """What a neuron shift writes into the residual stream at each layer: ``W_out @ shift`` (the
    output projection's weights; its bias cancels in a difference)."""
    out = {}
    for site in neuron_sites(model, layers=sorted(shifts)):
        weight = _plain_weight(site)
        index = torch.arange(site.d_mlp)
        out[site.layer] = (_column(weight, site.module, index).float() @ shifts[site.layer].float().to(weight.device)).cpu()
    return out
