"""Neuron classes from a neuron table: activated, amplified, suppressed, emoji-selective.

All four use mean |activation| on the emoji texts (``abs_base_emoji``, ``abs_merged_emoji``) for
"how active", and q-values for "significant", so that a neuron that changes sign or is negative
counts by its magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

CLASSES: tuple[str, ...] = ("activated", "amplified", "suppressed", "emoji_selective")
"""Class names, in the priority order used for the single ``class`` label of a neuron."""


@dataclass(frozen=True)
class ClassifyConfig:
    """Definitions of the neuron classes (stored in every diff summary)."""

    quiet_quantile: float = 0.10
    """A neuron is *quiet* in base when its base mean |act| on emoji texts is below this quantile
    of all neurons' base mean |act| (0.10: the least active tenth of the model)."""
    fold: float = 2.0
    """Amplified: merged mean |act| >= fold x base; suppressed: merged <= base / fold."""
    change_test: Literal["t", "wilcoxon"] = "t"
    """Which test of the paired change merged - base on emoji texts decides "significant"."""

    def __post_init__(self) -> None:
        if not 0.0 < self.quiet_quantile < 1.0:
            raise ValueError(f"quiet_quantile must be in (0, 1), got {self.quiet_quantile}")
        if not self.fold > 1.0:
            raise ValueError(f"fold must be > 1 (a fold change of 1 is no change), got {self.fold}")
        if self.change_test not in ("t", "wilcoxon"):
            raise ValueError(f"change_test must be 't' or 'wilcoxon', got {self.change_test!r}")


class Classification(NamedTuple):
    """Class membership of every neuron of a table (same index)."""

    flags: pd.DataFrame
    """One bool column per class; a neuron may be in several (e.g. activated and emoji_selective)."""
    labels: pd.Series
    """The first class of ``CLASSES`` a neuron is in, or "" for none."""
    quiet_threshold: float
    """Base mean |act| below which a neuron counts as quiet."""


def quiet_threshold(base_abs: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of base mean |act| over all neurons."""
    return float(np.quantile(np.asarray(base_abs, dtype=np.float64), quantile))


def classify_neurons(table: pd.DataFrame, config: ClassifyConfig, alpha: float) -> Classification:
    """Flag each neuron of ``table`` (needs ``abs_base_emoji``, ``abs_merged_emoji``, the change
    q-value and ``q_selective_base``/``q_selective_merged``) with the classes of ``config``."""
    change_q = "q_change" if config.change_test == "t" else "q_change_wilcoxon"
    needed = ["abs_base_emoji", "abs_merged_emoji", change_q, "q_selective_base", "q_selective_merged"]
    missing = [column for column in needed if column not in table.columns]
    if missing:
        raise ValueError(f"cannot classify neurons: the table lacks columns {missing}")

    base = table["abs_base_emoji"].to_numpy()
    merged = table["abs_merged_emoji"].to_numpy()
    changed = table[change_q].to_numpy() < alpha
    threshold = quiet_threshold(base, config.quiet_quantile)
    quiet = base < threshold
    flags = pd.DataFrame(
        {
            "activated": quiet & changed & (merged > base),
            # merged >= fold x base >= threshold, so "active in both" needs no extra check.
            "amplified": ~quiet & changed & (merged >= config.fold * base),
            # A neuron the fine-tune silences outright is suppressed too: merged need not stay active.
            "suppressed": ~quiet & changed & (merged * config.fold <= base),
            "emoji_selective": (table["q_selective_base"].to_numpy() < alpha)
            | (table["q_selective_merged"].to_numpy() < alpha),
        },
        index=table.index,
    )
    labels = pd.Series("", index=table.index, dtype=object)
    for name in reversed(CLASSES):  # later assignments win, so walk from lowest priority
        labels[flags[name].to_numpy()] = name
    return Classification(flags, labels, threshold)


def count_by_layer(layers: pd.Series, flags: pd.DataFrame) -> pd.DataFrame:
    """Per-layer count of neurons in each class, plus the layer's neuron total."""
    grouped = flags.groupby(layers.to_numpy())
    counts = grouped.sum().astype(int)
    counts.insert(0, "neurons", grouped.size().to_numpy())
    counts.index.name = "layer"
    return counts
