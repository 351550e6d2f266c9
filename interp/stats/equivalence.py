"""Minimum-effect and equivalence (TOST) tests of paired contrasts, for every neuron at once.

A fine-tune that touches every linear layer changes every neuron a little, so "no change" is false a
priori and a point-null test flags nearly everything given enough prompts. The question a
researcher asks is whether a neuron changed by at least a smallest effect of interest delta. For the
per-prompt contrasts ``x`` (n, m) of each neuron, mean ``m``, standard error ``se`` and df n - 1:

1. **Minimum effect** (H0: |mu| <= delta, H1: |mu| > delta). The test rejects when the
   (1 - alpha) confidence interval lies wholly outside [-delta, delta], i.e.
   ``p = min(1, 2 * P(T > (|m| - delta) / se))``: twice the one-sided p-value at the nearer
   boundary. It is valid for every mu in the null (the rejection probability is largest at
   mu = +-delta, where it is at most alpha), so it is conservative inside the interval.
2. **Equivalence** (TOST; H0: |mu| >= delta, H1: |mu| < delta): two one-sided t tests,
   ``p_low = P(T > (m + delta) / se)`` and ``p_up = P(T < (m - delta) / se)``,
   ``p = max(p_low, p_up)``: exactly ``statsmodels.stats.weightstats.ttost_paired(x, 0, -delta,
   delta)`` (tests check it neuron by neuron).
3. **Call**: with q-values from the same correction across neurons, a neuron is ``changed`` (q of
   1 below alpha), ``equivalent`` (q of 2 below alpha) or ``inconclusive``. The two cannot both
   hold: a confidence interval outside [-delta, delta] leaves TOST's p above 1/2.

``delta`` is given per neuron in the contrast's raw units: the diff sets it to a standardised
threshold times the neuron's own scale (``interp.stats.diff``). With se = 0 (every prompt's
contrast equal), the answer is exact: changed iff |m| > delta, equivalent iff |m| < delta.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

CALLS: tuple[str, ...] = ("changed", "equivalent", "inconclusive")


class MinEffectResult(NamedTuple):
    """One value per neuron."""

    estimate: np.ndarray
    """Mean contrast over prompts."""
    se: np.ndarray
    """Standard error of the mean."""
    df: np.ndarray
    """Degrees of freedom (prompts - 1)."""
    delta: np.ndarray
    """The smallest effect of interest, raw units."""
    p_changed: np.ndarray
    """Minimum-effect p-value (H0: |mu| <= delta)."""
    p_equivalent: np.ndarray
    """TOST p-value (H0: |mu| >= delta)."""
    t_low: np.ndarray
    """(m + delta) / se: TOST's lower one-sided statistic."""
    t_up: np.ndarray
    """(m - delta) / se: TOST's upper one-sided statistic."""


def min_effect_tests(contrast: np.ndarray, delta: np.ndarray | float) -> MinEffectResult:
    """Steps 1-2 of the module docstring for per-prompt contrasts ``contrast`` (n, m) and ``delta`` (m,)."""
    x = np.asarray(contrast, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"a minimum-effect test needs at least 2 prompts, got {n}")
    delta = np.broadcast_to(np.asarray(delta, dtype=np.float64), x.shape[1:]).copy()
    if (delta < 0).any() or not np.isfinite(delta).all():
        raise ValueError("delta must be finite and >= 0 for every neuron")
    mean = x.mean(axis=0)
    se = x.std(axis=0, ddof=1) / np.sqrt(n)
    df = np.full(mean.shape, n - 1.0)
    exact = se == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low = (mean + delta) / se
        t_up = (mean - delta) / se
        t_far = (np.abs(mean) - delta) / se
    p_changed = np.minimum(1.0, 2.0 * stats.t.sf(t_far, df))
    p_equivalent = np.maximum(stats.t.sf(t_low, df), stats.t.cdf(t_up, df))
    p_changed = np.where(exact, (np.abs(mean) <= delta).astype(np.float64), p_changed)
    p_equivalent = np.where(exact, (np.abs(mean) >= delta).astype(np.float64), p_equivalent)
    return MinEffectResult(mean, se, df, delta, p_changed, p_equivalent, t_low, t_up)


def calls(q_changed: np.ndarray, q_equivalent: np.ndarray, alpha: float) -> np.ndarray:
    """``changed`` / ``equivalent`` / ``inconclusive`` per neuron (step 3)."""
    out = np.full(np.shape(q_changed), "inconclusive", dtype=object)
    out[np.asarray(q_equivalent) < alpha] = "equivalent"
    out[np.asarray(q_changed) < alpha] = "changed"
    return out
