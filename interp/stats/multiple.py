"""Multiple-testing correction across neurons, and what it changes compared with p < alpha."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from statsmodels.stats.multitest import multipletests

from interp.stats.config import Correction, resolve_correction

def adjust_pvalues(p: np.ndarray, method: Correction = "fdr_bh") -> np.ndarray:
    """q-values (adjusted p-values) over all entries of ``p`` by ``method``; shape is kept."""
    p = np.asarray(p, dtype=np.float64)
    if np.isnan(p).any():
        # BH sorts p-values; a NaN would silently land somewhere in the ranking.
        raise ValueError(f"{int(np.isnan(p).sum())} p-values are NaN; check the inputs for NaN activations")
    if p.size == 0:
        return p.copy()
    _, q, _, _ = multipletests(p.ravel(), method=resolve_correction(method))
    return q.reshape(p.shape)


@dataclass(frozen=True)
class CorrectionSummary:
    """How many neurons one test flags with and without the correction."""

    test: str
    """Name of the test (``interaction``, ``change``, ...)."""
    method: str
    """Correction method (statsmodels name)."""
    alpha: float
    """Threshold applied to both p and q."""
    n_tests: int
    """Neurons tested."""
    n_uncorrected: int
    """Neurons with p < alpha."""
    n_corrected: int
    """Neurons with q < alpha."""
    removed_by_correction: int
    """Flagged by p < alpha but not by q < alpha."""
    expected_false_positives_uncorrected: float
    """alpha x n_tests: how many p < alpha calls pure noise would produce if no neuron changed
    (an upper bound: it assumes every neuron is null)."""
    expected_false_discoveries_corrected: float
    """Bound on the expected false calls among the q < alpha neurons: alpha x n_corrected for the
    FDR methods; for Bonferroni, alpha bounds the chance of even one."""


def summarize_correction(
    test: str, p: np.ndarray, q: np.ndarray, alpha: float, method: Correction
) -> CorrectionSummary:
    """Count p < alpha and q < alpha calls for one test."""
    n_uncorrected = int((p < alpha).sum())
    n_corrected = int((q < alpha).sum())
    bound = alpha if method == "bonferroni" else alpha * n_corrected
    return CorrectionSummary(
        test=test,
        method=method,
        alpha=alpha,
        n_tests=int(p.size),
        n_uncorrected=n_uncorrected,
        n_corrected=n_corrected,
        removed_by_correction=int(((p < alpha) & ~(q < alpha)).sum()),
        expected_false_positives_uncorrected=float(alpha * p.size),
        expected_false_discoveries_corrected=float(bound),
    )
