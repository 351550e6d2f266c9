"""Are the screen's rankings right where they are used? Each first-order estimator against exact values.

The screen ranks every neuron by two attribution estimates (``interp.causal.screen``): ``change``
(the neuron takes the base model's value: where the fine-tune's change is) and ``ablation`` (the
neuron takes its neutral mean: the suppressor's intervention). A random sample says whether an
estimator misses neurons; what chooses sets is its *top*, where first order errs most (large,
nonlinear effects). So, for each estimator, on the same few contexts the estimates were computed on:

1. its own top ``n_top`` neurons and a uniform random sample are intervened on exactly, one at a
   time (with the estimator's own intervention);
2. Spearman correlation of estimate and exact effect, on the top and on the sample apart;
3. recall@k: the candidates are the top and the sample; of the k neurons with the strongest exact
   effect among them, the share the estimator also puts in its own top k. A neuron outside the
   measured top can enter only through the sample, so recall is read with:
4. the estimated number of neurons in the whole model whose exact effect beats the k-th strongest of
   the measured top without being in it: the sample's count scaled by (all neurons / sample size),
   with a Clopper-Pearson interval.
Effects are signed changes of log P(target); "strongest" means most negative (removes the most).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from interp.causal.uncertainty import clopper_pearson
from interp.interventions import Neuron

ESTIMATORS: dict[str, str] = {"change": "patch", "ablation": "mean"}
"""Each estimator and the exact intervention it approximates."""


@dataclass(frozen=True)
class EstimatorCheck:
    """One estimator against exact values (module docstring)."""

    name: str
    intervention: str
    n_top: int
    n_sample: int
    n_contexts: int
    spearman_top: float
    spearman_sample: float
    recall: dict[int, float]
    """recall@k among the measured candidates."""
    outside_top: dict[int, dict[str, float]]
    """Per k: neurons estimated to beat the measured top's k-th exact effect from outside the top
    (``count``, ``low``, ``high`` over the whole model)."""
    underestimate: float
    """Median over the measured top of exact / estimate (above 1: first order underestimates)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_estimator(name: str, top: pd.DataFrame, sample: pd.DataFrame, n_neurons: int, ks: Sequence[int],
                    n_contexts: int) -> EstimatorCheck:
    """Steps 2-4 from ``top`` and ``sample`` (columns layer, index, estimate, exact)."""
    if len(top) < 2 or len(sample) < 2:
        raise ValueError(f"{name}: need at least two exact neurons in the top and in the sample")
    candidates = pd.concat([top, sample]).drop_duplicates(["layer", "index"])
    by_exact = candidates.sort_values("exact", kind="stable")
    own = [(int(r.layer), int(r.index)) for r in top.sort_values("estimate", kind="stable").itertuples()]
    in_top = set(own)
    recall, outside = {}, {}
    ranked_top = np.sort(top["exact"].to_numpy())
    for k in ks:
        k = min(k, len(top))
        best = {(int(r.layer), int(r.index)) for r in by_exact.head(k).itertuples()}
        recall[k] = len(best & set(own[:k])) / k
        threshold = ranked_top[k - 1]
        beats = sum(1 for r in sample.itertuples() if (int(r.layer), int(r.index)) not in in_top and r.exact < threshold)
        low, high = clopper_pearson(beats, len(sample))
        scale = n_neurons / len(sample)
        outside[k] = {"count": beats * scale, "low": low * n_neurons, "high": high * n_neurons, "in_sample": beats}
    ratio = top["exact"].to_numpy() / np.where(top["estimate"] == 0, np.nan, top["estimate"].to_numpy())
    return EstimatorCheck(name, ESTIMATORS[name], len(top), len(sample), n_contexts,
                          float(stats.spearmanr(top["estimate"], top["exact"]).statistic),
                          float(stats.spearmanr(sample["estimate"], sample["exact"]).statistic),
                          recall, outside, float(np.nanmedian(ratio)))


def top_of(estimates: np.ndarray, layers: Sequence[int], n: int, excluded: set[Neuron] = frozenset()) -> list[Neuron]:
    """The ``n`` neurons with the most negative estimate (strongest removal), outliers left out."""
    order = np.argsort(estimates, axis=None, kind="stable")
    rows, cols = np.unravel_index(order, estimates.shape)
    picked = []
    for r, c in zip(rows, cols):
        neuron = (layers[r], int(c))
        if neuron not in excluded:
            picked.append(neuron)
        if len(picked) == n:
            break
    return picked
