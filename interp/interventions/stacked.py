"""Many interventions in one batch: ``intervene_stacked`` runs G neuron sets side by side.

A sweep point measures a ranked set and its matched random sets on the same prompts
(``interp.causal.proxy.measure_sets``). Run one after another, each pass reads every weight of the
model for a small batch, which on a CPU is bound by memory traffic, not arithmetic. Stacking the G
conditions into one batch of G x rows reads the weights once for all of them
(``bench/bench_proxy.py`` measures the proxy engine built on this against plain hooked passes).

The contract: every forward pass inside the block sees a batch made of G stacked copies of the same
rows (copy g = rows ``g * n : (g + 1) * n``), and copy g has ``sets[g]`` ablated. Each layer's hook replaces only the
chosen neurons of each copy (``torch.where`` on a per-copy mask): every other value is
bit-identical to the unedited run, as with ``ablate``. Compared with running the sets one by one,
only the batch size differs, so results agree up to the float rounding of batched matmuls.

Modes: ``zero``, ``mean`` and ``resample`` as for ``ablate``; ``patch`` writes values recorded from
another model on the same rows (``reference[layer]`` is ``(rows, pos, d_mlp)`` for one copy's
rows, tiled over the copies).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from activations.hooks import NeuronFn, hooked
from activations.sites import neuron_sites
from interp.interventions.edits import ABLATION_MODES, LayerValues, _check_width, _pick
from interp.interventions.neuron_set import NeuronSet, layer_widths


def _copy_masks(indexes: Sequence[dict[int, Tensor]], layer: int, width: int) -> Tensor:
    """``(G, width)`` bool: which neurons of ``layer`` copy g ablates (``indexes[g] = sets[g].by_layer()``)."""
    mask = torch.zeros(len(indexes), width, dtype=torch.bool)
    for g, by_layer in enumerate(indexes):
        if layer in by_layer:
            mask[g, by_layer[layer]] = True
    return mask


STACKED_MODES: tuple[str, ...] = (*ABLATION_MODES, "patch")


def _stacked_fn(mask: Tensor, values: Tensor | None, pool: Tensor | None, generator: torch.Generator,
                layer: int, recorded: Tensor | None = None) -> NeuronFn:
    n_copies = mask.shape[0]

    def fn(acts: Tensor) -> Tensor:
        if acts.shape[0] % n_copies:
            raise ValueError(
                f"layer {layer}: a stacked ablation of {n_copies} sets needs a batch of {n_copies} stacked copies, "
                f"but the batch has {acts.shape[0]} rows; repeat the inputs {n_copies} times (input_ids.repeat(G, 1))"
            )
        rows = acts.shape[0] // n_copies
        where = mask.to(acts.device).repeat_interleave(rows, dim=0)[:, None, :]  # (batch, 1, d_mlp)
        if recorded is not None:  # patch: one copy's recorded rows, repeated for every copy
            if recorded.shape[1:] != acts.shape[1:] or recorded.shape[0] * n_copies != acts.shape[0]:
                raise ValueError(f"layer {layer}: patch values of shape {tuple(recorded.shape)} do not fit a stacked "
                                 f"batch of shape {tuple(acts.shape)} ({n_copies} copies)")
            replacement = recorded.to(device=acts.device, dtype=acts.dtype).repeat(n_copies, 1, 1)
        elif pool is not None:  # resample: each (row, position) reads one whole donor token
            picks = torch.randint(len(pool), (acts.shape[0] * acts.shape[1],), generator=generator)
            replacement = pool[picks].to(device=acts.device, dtype=acts.dtype).reshape(acts.shape)
        elif values is not None:
            replacement = values.to(device=acts.device, dtype=acts.dtype)
        else:
            replacement = torch.zeros((), device=acts.device, dtype=acts.dtype)
        return torch.where(where, replacement, acts)

    return fn


@contextmanager
def intervene_stacked(
    model: nn.Module,
    sets: Sequence[NeuronSet],
    mode: str = "zero",
    reference: LayerValues | Tensor | np.ndarray | None = None,
    *,
    seed: int = 0,
) -> Iterator[None]:
    """Edit ``sets[g]`` in stacked copy g of every batch inside the block (module docstring).

    ``mode`` and ``reference`` mean what they mean for ``ablate`` (and ``patch``: recorded values).
    Resample draws from one seeded generator for the whole stack, so its donor tokens differ from G
    separate ``ablate`` calls.
    """
    if not sets:
        raise ValueError("a stacked intervention needs at least one neuron set")
    if mode not in STACKED_MODES:
        raise ValueError(f"unknown intervention {mode!r}; choose one of {', '.join(STACKED_MODES)}")
    if mode != "zero" and reference is None:
        raise ValueError(f"{mode} ablation needs reference values: per-layer means (mean) or a donor token pool (resample)")
    widths = layer_widths(model)
    for neurons in sets:
        neurons.check_fits(widths)
    indexes = [neurons.by_layer() for neurons in sets]
    layers = sorted({layer for by_layer in indexes for layer in by_layer})
    generator = torch.Generator().manual_seed(seed)
    hooks = []
    for site in neuron_sites(model, layers=layers):
        values = pool = recorded = None
        if mode == "patch":
            recorded = _pick(reference, site.layer, "patch values")  # type: ignore[arg-type]
            _check_width(recorded, site.d_mlp, site.layer, "patch values")
        elif mode != "zero":
            given = _pick(reference, site.layer, f"{mode} reference")  # type: ignore[arg-type]
            _check_width(given, site.d_mlp, site.layer, f"{mode} reference")
            expected = 1 if mode == "mean" else 2
            if given.dim() != expected or len(given) == 0:
                raise ValueError(f"{mode} reference for layer {site.layer} has shape {tuple(given.shape)}; "
                                 f"expected {'(d_mlp,)' if mode == 'mean' else '(n_tokens, d_mlp)'}")
            values, pool = (given, None) if mode == "mean" else (None, given)
        mask = _copy_masks(indexes, site.layer, site.d_mlp)
        hooks.append((site, _stacked_fn(mask, values, pool, generator, site.layer, recorded)))
    with hooked(hooks):
        yield


ablate_stacked = intervene_stacked
"""The same context manager under the name the ablation experiments use."""
