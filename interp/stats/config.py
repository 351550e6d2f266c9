"""The statistics' settings: how ``diff`` and ``regress`` test, correct, classify and flag.

Frozen dataclasses and the names they are checked against, importing nothing heavy (no numpy), so
``interp diff --help`` and a bad flag are answered at once; the statistics live beside this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

REDUCTIONS: tuple[str, ...] = ("mean", "max", "last", "content_mean", "content_absmean", "content_max",
                               "marked_mean", "control_mean", "context_mean")
"""Per-prompt reductions a cache may hold (``activations.reduce.REDUCTIONS``)."""


Correction = Literal["fdr_bh", "fdr_by", "bonferroni"]
CORRECTIONS: tuple[str, ...] = get_args(Correction)
CORRECTION_ALIASES: dict[str, str] = {"bh": "fdr_bh", "by": "fdr_by", "bonferroni": "bonferroni"}
"""Short names accepted on the command line."""


def resolve_correction(name: str) -> Correction:
    """Accept both the statsmodels name (``fdr_bh``) and the short one (``bh``)."""
    resolved = CORRECTION_ALIASES.get(name, name)
    if resolved not in CORRECTIONS:
        raise ValueError(
            f"unknown correction {name!r}; use one of {sorted(CORRECTION_ALIASES)} or {list(CORRECTIONS)}"
        )
    return resolved  # type: ignore[return-value]


@dataclass(frozen=True)
class ClassifyConfig:
    """Definitions of the neuron classes (stored in every diff summary, shown in the report)."""

    fold: float = 2.0
    """Amplified: merged mean |a| >= fold x base; suppressed: merged <= base / fold."""
    firing_threshold: float = 1.0
    """A token fires when |a| > this x the neuron's pooled RMS over content tokens."""
    quiet_rate: float = 0.01
    """Activated: the base model fires on at most this share of content tokens."""
    active_rate: float = 0.05
    """Activated: the merged model fires on at least this share of content tokens."""

    def __post_init__(self) -> None:
        if not self.fold > 1.0:
            raise ValueError(f"fold must be > 1 (a fold change of 1 is no change), got {self.fold}")
        if self.firing_threshold <= 0:
            raise ValueError(f"firing_threshold must be > 0, got {self.firing_threshold}")
        if not 0.0 <= self.quiet_rate < self.active_rate <= 1.0:
            raise ValueError(f"need 0 <= quiet_rate < active_rate <= 1, got {self.quiet_rate} and {self.active_rate}")


@dataclass(frozen=True)
class OutlierConfig:
    """Thresholds of the outlier detector."""

    massive_factor: float = 100.0
    """Massive: max |a| >= this x the layer's median max |a|."""
    pos0_factor: float = 100.0
    """Position-0 only: mean |a| at position 0 >= this x max |a| over content tokens."""

    def __post_init__(self) -> None:
        if self.massive_factor <= 1 or self.pos0_factor <= 1:
            raise ValueError("outlier factors must be > 1 (a neuron cannot be an outlier against itself)")


@dataclass(frozen=True)
class DiffConfig:
    """How ``diff`` tests, corrects, classifies and flags (stored in the summary)."""

    delta: float = 0.2
    """Smallest effect of interest, in units of the neuron's token scale (the SD of its activation
    over content tokens, pooled over both models): 0.2 is Cohen's conventional "small" effect. A
    neuron is ``changed`` only if its contrast exceeds this with confidence (minimum-effect test)."""
    correction: Correction = "fdr_bh"
    """Multiple-testing correction across neurons, per test: ``fdr_bh`` (Benjamini-Hochberg),
    ``fdr_by`` (Benjamini-Yekutieli, any dependence) or ``bonferroni``; ``bh``/``by`` also accepted."""
    alpha: float = 0.05
    """Level for the q-values of every call."""
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    """Definitions of the neuron classes."""
    outliers: OutlierConfig = field(default_factory=OutlierConfig)
    """Thresholds of the outlier detector."""
    exclude_outliers: bool = True
    """Keep outlier neurons out of the flagged (candidate) set."""
    split_seed: int = 0
    """Seed of the split-half replication's random halves."""
    replication_top: int = 100
    """Top flagged neurons (chosen on one half) checked on the other half."""
    block_size: int = 8192
    """Neurons tested per block: bounds memory to a few x (n_prompts x block_size) float64 values."""

    def __post_init__(self) -> None:
        if not self.delta >= 0:
            raise ValueError(f"delta must be >= 0 (in token-scale units), got {self.delta}")
        object.__setattr__(self, "correction", resolve_correction(self.correction))
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.block_size < 1 or self.replication_top < 1:
            raise ValueError("block_size and replication_top must be >= 1")


@dataclass(frozen=True)
class RegressConfig:
    """How ``regress`` fits and tests (stored in the summary)."""

    reduction: str = "content_mean"
    """Per-prompt reduction whose mean over prompts (those with tokens in its scope) is a neuron's
    activation at a checkpoint."""
    maxlags: int | None = None
    """Lags in the HAC kernel; None: Newey-West's rule floor(4 (T / 100)^(2/9))."""
    kernel: Literal["bartlett", "uniform"] = "bartlett"
    """HAC kernel weights (statsmodels' ``bartlett`` default, or ``uniform``)."""
    use_correction: bool = False
    """Multiply the HAC variance by T / (T - 2) (statsmodels' ``use_correction``; off by default
    there too)."""
    use_t: bool = False
    """t (T - 2 df) instead of normal p-values; statsmodels uses the normal for HAC by default."""
    correction: Correction = "fdr_bh"
    """Multiple-testing correction across neurons (``fdr_bh``, ``fdr_by``, ``bonferroni``)."""
    alpha: float = 0.05
    """q-value threshold for the significant set."""

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.maxlags is not None and self.maxlags < 0:
            raise ValueError(f"maxlags must be >= 0, got {self.maxlags}")
        if self.kernel not in ("bartlett", "uniform"):
            raise ValueError(f"kernel must be 'bartlett' or 'uniform', got {self.kernel!r}")
        object.__setattr__(self, "correction", resolve_correction(self.correction))
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
