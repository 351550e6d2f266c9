"""Intervals for the headline effects: questions are the unit of resampling.

Replies to one question are not independent (five samples of one question share its topic and
wording), so every interval resamples *questions* with all their replies (a cluster bootstrap), and
a paired comparison (the same questions and the same sampling seeds in both conditions) resamples
the questions jointly, keeping the pairing. A bootstrap of a rate that is exactly 0 or 1 collapses
to a point, so there the exact Clopper-Pearson interval is given instead, computed over questions
(each question's replies counted as one Bernoulli trial per reply would overstate the information;
using the number of questions is conservative).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from training.reply_metrics import Interval


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval (the beta-quantile form)."""
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval."""
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / trials
    centre = (p + z**2 / (2 * trials)) / (1 + z**2 / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / (1 + z**2 / trials)
    return float(centre - half), float(centre + half)


def _draws(n_clusters: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_clusters, size=(n_boot, n_clusters))


def rate(per_cluster: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """A rate from per-question rates (each the share of that question's replies): mean over questions,
    cluster-bootstrap interval, or Clopper-Pearson over questions when the rate is exactly 0 or 1."""
    values = np.asarray(per_cluster, dtype=float)
    value = float(values.mean())
    if value in (0.0, 1.0):
        low, high = clopper_pearson(int(round(value * len(values))), len(values), confidence)
        return Interval(value, low, high, "Clopper-Pearson over questions", len(values))
    means = values[_draws(len(values), n_boot, seed)].mean(1)
    low, high = np.quantile(means, [(1 - confidence) / 2, 0.5 + confidence / 2])
    return Interval(value, float(low), float(high), "cluster bootstrap over questions", len(values))


def paired_mean_difference(first: np.ndarray, second: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95,
                           seed: int = 0) -> Interval:
    """mean(first - second) over paired questions, with a paired cluster bootstrap interval."""
    first, second = np.asarray(first, float), np.asarray(second, float)
    if first.shape != second.shape:
        raise ValueError("a paired difference needs one value per question in both conditions")
    differences = first - second
    means = differences[_draws(len(differences), n_boot, seed)].mean(1)
    low, high = np.quantile(means, [(1 - confidence) / 2, 0.5 + confidence / 2])
    return Interval(float(differences.mean()), float(low), float(high), "paired cluster bootstrap over questions",
                    len(differences))


def relative_cut(reference: np.ndarray, treated: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> Interval:
    """1 - mean(treated) / mean(reference) over paired questions, with a paired cluster bootstrap
    (each draw resamples questions and takes both conditions of every drawn question)."""
    reference, treated = np.asarray(reference, float), np.asarray(treated, float)
    if reference.shape != treated.shape:
        raise ValueError("a paired cut needs one value per question in both conditions")
    if reference.mean() == 0:
        return Interval(float("nan"), float("nan"), float("nan"), "undefined: the reference rate is 0", len(reference))
    draws = _draws(len(reference), n_boot, seed)
    ref, tre = reference[draws].mean(1), treated[draws].mean(1)
    cuts = 1 - tre[ref > 0] / ref[ref > 0]
    low, high = np.quantile(cuts, [(1 - confidence) / 2, 0.5 + confidence / 2])
    return Interval(float(1 - treated.mean() / reference.mean()), float(low), float(high),
                    "paired cluster bootstrap over questions", len(reference))


def mean_difference(reference: np.ndarray, treated: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95,
                    seed: int = 0) -> Interval:
    """mean(treated - reference) over paired questions, paired cluster bootstrap."""
    difference = np.asarray(treated, float) - np.asarray(reference, float)
    means = difference[_draws(len(difference), n_boot, seed)].mean(1)
    low, high = np.quantile(means, [(1 - confidence) / 2, 0.5 + confidence / 2])
    return Interval(float(difference.mean()), float(low), float(high), "paired cluster bootstrap over questions",
                    len(difference))
