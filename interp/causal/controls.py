"""Matched random neuron sets: the control every causal claim is checked against.

"Ablating these k neurons removes the behaviour" means something only if k *other* neurons of the same
kind would not. Neurons differ enormously in how much they can move the output: a neuron's typical
write into the residual stream is E[a^2] ||W_out[:, i]||^2 (its mean squared activation times the
squared norm of its output weights), which spans orders of magnitude within a layer. A random set
matched only on layer counts is dominated by weak neurons and makes almost any ranked set look
special. So:

1. Strata: each neuron's layer, and the decile of its write norm within that layer (E[a^2] from
   content tokens of templated neutral chats, the same data mean ablation uses).
2. Pool: every neuron except the flagged ones (the diff's candidates), the outliers (massive /
   position-0 neurons) and the candidate set itself. One function builds it, for the study and the
   CLI alike (``control_pool``).
3. A random set has exactly the candidate set's count in every (layer, decile) stratum, drawn
   without replacement from the pool. A stratum the pool cannot fill borrows from the nearest
   deciles of the same layer; how many were borrowed is recorded.
Sets are seeded one by one ((seed, i)), so any set can be redrawn alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from activations.sites import neuron_sites
from interp.interventions.neuron_set import Neuron, NeuronSet

N_DECILES = 10


def write_norms(model: nn.Module, mean_square: dict[int, torch.Tensor] | np.ndarray) -> np.ndarray:
    """``(n_layers, d_mlp)``: E[a^2] x ||W_out[:, i]||^2 for every neuron (``mean_square`` by layer)."""
    rows = []
    for site in neuron_sites(model):
        weight = site.module.weight.detach().float()
        # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out): the neuron is the input axis either way.
        column_norms = (weight**2).sum(0) if type(site.module).__name__ != "Conv1D" else (weight**2).sum(1)
        square = mean_square[site.layer] if isinstance(mean_square, dict) else mean_square[site.layer]
        rows.append(torch.as_tensor(square).float().cpu() * column_norms.cpu())
    return torch.stack(rows).numpy().astype(np.float64)


def strata(norms: np.ndarray, n_deciles: int = N_DECILES) -> np.ndarray:
    """``(n_layers, d_mlp)`` decile (0 = weakest) of each neuron's write norm within its layer."""
    ranks = norms.argsort(axis=1).argsort(axis=1)
    return (ranks * n_deciles) // norms.shape[1]


def control_pool(shape: tuple[int, int], *, flagged: NeuronSet | None = None, outliers: NeuronSet | None = None,
                 candidates: NeuronSet | None = None) -> np.ndarray:
    """``(n_layers, d_mlp)`` bool: neurons a matched random set may use (step 2)."""
    pool = np.ones(shape, dtype=bool)
    for excluded in (flagged, outliers, candidates):
        for layer, index in excluded or ():
            pool[layer, index] = False
    return pool


@dataclass(frozen=True)
class MatchedSets:
    """Random sets matched to one candidate set."""

    sets: tuple[NeuronSet, ...]
    borrowed: int
    """Neurons drawn from a neighbouring decile because their own stratum ran out (over all sets)."""


def matched_random_sets(candidates: NeuronSet, decile: np.ndarray, pool: np.ndarray, n_sets: int,
                        seed: int) -> MatchedSets:
    """``n_sets`` random sets with the candidates' count in every (layer, decile) stratum (step 3)."""
    wanted = Counter((layer, int(decile[layer, index])) for layer, index in candidates)
    n_deciles = int(decile.max()) + 1
    sets, borrowed = [], 0
    for i in range(n_sets):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        used = np.zeros_like(pool)
        drawn: list[Neuron] = []
        for (layer, d), count in sorted(wanted.items()):
            # own decile first, then the nearest others (ties: the weaker side first)
            for offset in sorted(range(n_deciles), key=lambda o: (abs(o - d), o)):
                free = np.flatnonzero(pool[layer] & ~used[layer] & (decile[layer] == offset))
                take = min(count, len(free))
                if take:
                    picks = rng.choice(free, size=take, replace=False)
                    used[layer, picks] = True
                    drawn.extend((layer, int(p)) for p in picks)
                    borrowed += take if offset != d else 0
                    count -= take
                if count == 0:
                    break
            if count:
                raise ValueError(f"layer {layer} has too few neurons outside the flagged, outlier and candidate sets "
                                 f"to draw a matched random set ({count} missing); use a smaller k")
        sets.append(NeuronSet.from_pairs(drawn))
    return MatchedSets(tuple(sets), borrowed)


def neuron_mask(shape: tuple[int, int], neurons: NeuronSet) -> np.ndarray:
    """A ``(layers, width)`` boolean mask of ``neurons``."""
    mask = np.zeros(shape, dtype=bool)
    for layer, index in neurons:
        mask[layer, index] = True
    return mask
