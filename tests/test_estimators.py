"""The estimators' check: recall@k, Spearman and the neurons outside the top, against a manual recomputation
on planted values, and on a real screen of a tiny model against exact interventions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from interp.causal.estimators import check_estimator, top_of


def _frame(neurons, estimate, exact):
    return pd.DataFrame({"layer": [n[0] for n in neurons], "index": [n[1] for n in neurons],
                         "estimate": estimate, "exact": exact})


def test_recall_spearman_and_the_neurons_outside_the_top_equal_a_manual_count():
    rng = np.random.default_rng(0)
    top_neurons = [(1, i) for i in range(10)]
    # the estimator ranks 0..9 (most negative first); exact effects shuffle the order a little and
    # one sampled neuron outside the top is stronger than all of it (a miss)
    estimate = -np.linspace(1.0, 0.1, 10)
    exact = estimate * (1 + 0.3 * rng.standard_normal(10))
    sample_neurons = [(2, i) for i in range(40)] + [(1, 0)]  # the sample may overlap the top
    sample_exact = np.r_[rng.normal(0, 0.01, 39), -3.0, exact[0]]
    sample_estimate = np.r_[sample_exact[:39] + rng.normal(0, 0.002, 39), -0.05, estimate[0]]
    check = check_estimator("change", _frame(top_neurons, estimate, exact),
                            _frame(sample_neurons, sample_estimate, sample_exact), n_neurons=4100, ks=(3, 5),
                            n_contexts=2)
    candidates = {n: e for n, e in zip(top_neurons + sample_neurons, np.r_[exact, sample_exact])}
    for k in (3, 5):
        best = set(sorted(candidates, key=candidates.get)[:k])
        assert check.recall[k] == pytest.approx(len(best & set(top_neurons[:k])) / k)
        kth = np.sort(exact)[k - 1]
        beats = sum(1 for n, e in zip(sample_neurons, sample_exact) if n not in top_neurons and e < kth)
        assert check.outside_top[k]["in_sample"] == beats
        assert check.outside_top[k]["count"] == pytest.approx(beats * 4100 / len(sample_neurons))
        assert check.outside_top[k]["low"] <= check.outside_top[k]["count"] <= check.outside_top[k]["high"]
    assert check.outside_top[3]["in_sample"] == check.outside_top[5]["in_sample"] == 1  # the planted miss
    assert check.recall[3] < 1  # the miss is among the best three but not in the top
    assert check.spearman_top == pytest.approx(stats.spearmanr(estimate, exact).statistic)
    assert check.spearman_sample == pytest.approx(stats.spearmanr(sample_estimate, sample_exact).statistic)
    assert check.underestimate == pytest.approx(np.median(exact / estimate))


def test_top_of_takes_the_most_negative_estimates_and_skips_outliers():
    estimates = np.array([[0.3, -0.2, -0.9], [-0.5, 0.0, -0.1]])
    assert top_of(estimates, (4, 7), 3) == [(4, 2), (7, 0), (4, 1)]
    assert top_of(estimates, (4, 7), 2, excluded={(7, 0)}) == [(4, 2), (4, 1)]
