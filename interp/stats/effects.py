"""Effect sizes per neuron: standardised paired change, fold change of magnitude, raw difference."""

from __future__ import annotations

import numpy as np


def cohens_d_paired(diff: np.ndarray) -> np.ndarray:
    """Cohen's d for paired data (d_z): mean / sd of the per-prompt differences (n, m) -> (m,).

    A neuron whose differences are all equal has sd 0: d is 0 if they are all 0, else +-inf.
    """
    diff = np.asarray(diff, dtype=np.float64)
    mean = diff.mean(axis=0)
    sd = diff.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = mean / sd
    return np.where((sd == 0) & (mean == 0), 0.0, d)


def mean_abs(acts: np.ndarray) -> np.ndarray:
    """Mean |activation| over prompts (n, m) -> (m,): how active a neuron is, whatever its sign."""
    return np.abs(np.asarray(acts, dtype=np.float64)).mean(axis=0)


def log2_fold_change(merged_abs: np.ndarray, base_abs: np.ndarray, epsilon: float) -> np.ndarray:
    """log2((merged + eps) / (base + eps)) of mean |activation|; ``epsilon`` keeps a neuron that is
    ~0 in base from getting an unbounded fold change."""
    return np.log2((merged_abs + epsilon) / (base_abs + epsilon))
