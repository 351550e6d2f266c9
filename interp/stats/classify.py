"""Neuron classes in the paper's sense, from a diff's calls and the caches' token statistics.

Magnitudes are per-token |activation| over content tokens (never |per-prompt mean|, which lets a
neuron's positive and negative tokens cancel), and "changed" is the minimum-effect call of the
design's change contrast (merged - base in mean |a|), so a change of 0.010 -> 0.0101 never counts.

- ``activated``: quiet in base, firing after the fine-tune. A token *fires* when its |a| exceeds
  ``firing_threshold`` x the neuron's own scale (root mean square of a over content tokens, pooled
  over both models, so the threshold sits between the two models' levels). The base model's firing
  rate is at most ``quiet_rate``, the merged model's at least ``active_rate``, and the change call
  is ``changed`` upwards. Rates come from each cache's |a| histogram.
- ``amplified`` / ``suppressed``: active in base (not activated), mean |a| up / down by at least
  ``fold`` with the change call ``changed`` in that direction.
- ``<design>_specific`` (e.g. ``emoji_specific``): any of the design's specific contrasts is
  ``changed``: the fine-tune's change is larger at the marked positions (emojis, or where the
  model writes one) than at matched positions, by more than delta.

A neuron may be in several classes; its single ``class`` label is the first of ``activated``,
``amplified``, ``suppressed``, then specific.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from activations.running import share_above
from interp.stats.config import ClassifyConfig

CHANGE_CLASSES: tuple[str, ...] = ("activated", "amplified", "suppressed")


class Classification(NamedTuple):
    flags: pd.DataFrame
    """One bool column per class."""
    labels: pd.Series
    """The first class a neuron is in, or ""."""
    columns: dict[str, np.ndarray]
    """Descriptive columns used by the definitions (firing rates, fold change, magnitudes)."""


def firing_rates(base_stats, merged_stats, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Share of content tokens with |a| > threshold x pooled RMS, in base and merged, ``(n_layers, d_mlp)``."""
    if base_stats.abs_hist is None or merged_stats.abs_hist is None:
        raise ValueError("firing rates need the caches' |a| histograms; capture with --histogram")
    rms = np.sqrt((base_stats.content.mean_square + merged_stats.content.mean_square) / 2)
    tau = threshold * rms
    return share_above(base_stats.abs_hist, tau), share_above(merged_stats.abs_hist, tau)


def classify_neurons(
    calls: dict[str, np.ndarray],
    estimates: dict[str, np.ndarray],
    specific: tuple[str, ...],
    change: str | None,
    magnitudes: tuple[np.ndarray, np.ndarray] | None,
    rates: tuple[np.ndarray, np.ndarray] | None,
    config: ClassifyConfig,
    specific_name: str = "specific",
) -> Classification:
    """Flags for every neuron (flat order). ``calls``/``estimates`` by contrast; ``magnitudes`` and
    ``rates`` are flat ``(base, merged)`` mean |a| and firing rates on the change condition."""
    n = len(next(iter(calls.values())))
    flags: dict[str, np.ndarray] = {}
    columns: dict[str, np.ndarray] = {}
    if change is not None and magnitudes is not None:
        up = (calls[change] == "changed") & (estimates[change] > 0)
        down = (calls[change] == "changed") & (estimates[change] < 0)
        base_abs, merged_abs = magnitudes
        with np.errstate(divide="ignore", invalid="ignore"):
            fold = np.where(base_abs > 0, merged_abs / base_abs, np.inf)
        columns.update(abs_base=base_abs, abs_merged=merged_abs, fold=fold)
        if rates is not None:
            base_rate, merged_rate = rates
            columns.update(fire_base=base_rate, fire_merged=merged_rate)
            activated = up & (base_rate <= config.quiet_rate) & (merged_rate >= config.active_rate)
        else:
            activated = np.zeros(n, dtype=bool)
        flags["activated"] = activated
        flags["amplified"] = up & ~activated & (fold >= config.fold)
        flags["suppressed"] = down & (fold <= 1 / config.fold)
    flags[specific_name] = np.logical_or.reduce([calls[name] == "changed" for name in specific]) if specific \
        else np.zeros(n, dtype=bool)
    table = pd.DataFrame(flags)
    labels = pd.Series("", index=table.index, dtype=object)
    for name in reversed(list(flags)):  # later assignments win: walk from the lowest priority
        labels[table[name].to_numpy()] = name
    return Classification(table, labels, columns)


def count_by_layer(layers: pd.Series, flags: pd.DataFrame) -> pd.DataFrame:
    """Per-layer count of neurons in each class, plus the layer's neuron total."""
    grouped = flags.groupby(layers.to_numpy())
    counts = grouped.sum().astype(int)
    counts.insert(0, "neurons", grouped.size().to_numpy())
    counts.index.name = "layer"
    return counts
