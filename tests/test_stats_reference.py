"""Vectorised statistics vs scipy / statsmodels, neuron by neuron on a random sample of neurons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.sandwich_covariance import weights_uniform
from statsmodels.stats.weightstats import ttest_ind, ttost_paired
from stats_helpers import simulate_study

from interp.stats import DiffConfig, diff_inputs, emoji_design
from interp.stats.equivalence import calls, min_effect_tests
from interp.stats.interaction import interaction_2x2, interaction_unpaired
from interp.stats.multiple import adjust_pvalues
from interp.stats.paired import paired_t, two_sample_t, wilcoxon_signed_rank
from interp.stats.regress import hac_regression

RTOL = 1e-6  # the brief's bar for p-values and coefficients
N_SAMPLE = 20


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _cells(rng: np.random.Generator, n: int, m: int) -> list[np.ndarray]:
    """Four correlated cells with a range of effects, so p-values span many decades."""
    prompt = rng.normal(0, 1, (n, m))
    effect = rng.normal(0, 0.4, m)
    return [prompt + rng.normal(0, 0.5, (n, m)) + shift for shift in (0, 0, effect, 0)]


def _sample(rng: np.random.Generator, m: int) -> np.ndarray:
    return rng.choice(m, size=N_SAMPLE, replace=False)


def test_paired_t_matches_scipy_ttest_rel(rng):
    base, merged = rng.normal(0, 1, (30, 500)), rng.normal(0.2, 1, (30, 500))
    ours = paired_t(merged - base)
    for j in _sample(rng, 500):
        reference = stats.ttest_rel(merged[:, j], base[:, j])
        np.testing.assert_allclose(ours.statistic[j], reference.statistic, rtol=RTOL)
        np.testing.assert_allclose(ours.p[j], reference.pvalue, rtol=RTOL)


def test_paired_t_degenerate_neurons():
    diff = np.zeros((5, 2))
    diff[:, 1] = 0.5  # a constant shift: infinitely significant, not NaN
    result = paired_t(diff)
    assert result.p.tolist() == [1.0, 0.0]


def test_wilcoxon_matches_scipy_with_ties_and_zeros(rng):
    # Rounding to one decimal makes ties and exact zeros common: the hard cases for ranking.
    diff = np.round(rng.normal(0.15, 1, (40, 400)), 1)
    diff[:, 0] = 0.0  # all zero: no evidence
    assert (diff == 0).any(axis=0).mean() > 0.5
    ours = wilcoxon_signed_rank(diff)
    assert ours.p[0] == 1.0
    # Same method: zeros dropped ("wilcox"), normal approximation, no continuity correction.
    # Both compute the same tie-corrected z, so they agree to float rounding: we require 1e-9.
    for j in _sample(rng, 399) + 1:
        reference = stats.wilcoxon(diff[:, j], zero_method="wilcox", correction=False, method="asymptotic")
        np.testing.assert_allclose(ours.p[j], reference.pvalue, rtol=1e-9)
        n = np.count_nonzero(diff[:, j])  # scipy's statistic is min(R+, R-)
        assert min(ours.estimate[j], n * (n + 1) / 2 - ours.estimate[j]) == pytest.approx(reference.statistic)


def test_wilcoxon_continuous_data(rng):
    diff = rng.normal(0.3, 1, (60, 200))
    ours = wilcoxon_signed_rank(diff)
    reference = stats.wilcoxon(diff, axis=0, method="asymptotic")
    np.testing.assert_allclose(ours.p, reference.pvalue, rtol=1e-9)


def _long_2x2(cells: list[np.ndarray], j: int) -> pd.DataFrame:
    n = cells[0].shape[0]
    rows = []
    for (merged, emoji), values in zip([(0, 1), (0, 0), (1, 1), (1, 0)], cells):
        rows.append(pd.DataFrame({"y": values[:, j], "prompt": np.arange(n), "merged": merged, "emoji": emoji}))
    return pd.concat(rows, ignore_index=True)


FORMULAS = {
    "slopes": "y ~ C(prompt) * merged + C(prompt) * emoji + merged:emoji",
    "intercept": "y ~ C(prompt) + merged * emoji",
    "none": "y ~ merged * emoji",
}


@pytest.mark.parametrize("prompt_effects", list(FORMULAS))
def test_interaction_matches_statsmodels_ols(rng, prompt_effects):
    cells = _cells(rng, 15, 300)  # base_emoji, base_twin, merged_emoji, merged_twin
    ours = interaction_2x2(*cells, prompt_effects=prompt_effects)
    for j in _sample(rng, 300):
        fit = smf.ols(FORMULAS[prompt_effects], data=_long_2x2(cells, j)).fit()
        np.testing.assert_allclose(ours.estimate[j], fit.params["merged:emoji"], rtol=RTOL)
        np.testing.assert_allclose(ours.statistic[j], fit.tvalues["merged:emoji"], rtol=RTOL)
        np.testing.assert_allclose(ours.p[j], fit.pvalues["merged:emoji"], rtol=RTOL)
        assert ours.df[j] == fit.df_resid


def test_neutral_interaction_pooled_matches_statsmodels_ols(rng):
    n_emoji, n_neutral, m = 14, 11, 200
    base_e, base_n = rng.normal(0, 1, (n_emoji, m)), rng.normal(0, 1, (n_neutral, m))
    merged_e = base_e + rng.normal(0.3, 0.5, (n_emoji, m))
    merged_n = base_n + rng.normal(0.0, 0.5, (n_neutral, m))
    ours = interaction_unpaired(base_e, merged_e, base_n, merged_n, equal_var=True)
    for j in _sample(rng, m):
        frames = []
        for values, merged, emoji_set, offset in ((base_e, 0, 1, 0), (merged_e, 1, 1, 0),
                                                  (base_n, 0, 0, n_emoji), (merged_n, 1, 0, n_emoji)):
            frames.append(pd.DataFrame({"y": values[:, j], "prompt": offset + np.arange(len(values)),
                                        "merged": merged, "emoji_set": emoji_set}))
        fit = smf.ols("y ~ C(prompt) + merged + merged:emoji_set", data=pd.concat(frames)).fit()
        np.testing.assert_allclose(ours.estimate[j], fit.params["merged:emoji_set"], rtol=RTOL)
        np.testing.assert_allclose(ours.p[j], fit.pvalues["merged:emoji_set"], rtol=RTOL)


def test_neutral_interaction_welch_matches_statsmodels(rng):
    change_e, change_n = rng.normal(0.2, 1.0, (25, 100)), rng.normal(0.0, 0.4, (18, 100))
    zeros_e, zeros_n = np.zeros_like(change_e), np.zeros_like(change_n)
    ours = interaction_unpaired(zeros_e, change_e, zeros_n, change_n)
    assert np.allclose(ours.p, two_sample_t(change_e, change_n, equal_var=False).p)
    for j in _sample(rng, 100):
        t, p, df = ttest_ind(change_e[:, j], change_n[:, j], usevar="unequal")
        np.testing.assert_allclose([ours.statistic[j], ours.p[j], ours.df[j]], [t, p, df], rtol=RTOL)


@pytest.mark.parametrize(
    "options",
    [{"maxlags": 3}, {"maxlags": 0}, {"maxlags": 4, "use_correction": True}, {"maxlags": 2, "use_t": True},
     {"maxlags": 3, "kernel": "uniform"}],
)
def test_hac_regression_matches_statsmodels(rng, options):
    n_obs, m = 40, 300
    x = np.cumsum(rng.normal(0, 1, (n_obs, m)), axis=0)  # random walks: strongly autocorrelated
    y = 0.3 * x[:, 0] + np.cumsum(rng.normal(0, 1, n_obs))
    x[:, 1] = y + rng.normal(0, 0.5, n_obs)  # one neuron that tracks the metric closely
    kernel = options.get("kernel", "bartlett")
    ours = hac_regression(x, y, options["maxlags"], kernel, options.get("use_correction", False),
                          options.get("use_t", False))
    cov_kwds = {"maxlags": options["maxlags"], "use_correction": options.get("use_correction", False)}
    if kernel == "uniform":
        cov_kwds["weights_func"] = weights_uniform
    for j in [0, 1, *_sample(rng, m - 2) + 2]:
        fit = sm.OLS(y, sm.add_constant(x[:, j])).fit(cov_type="HAC", cov_kwds=cov_kwds,
                                                       use_t=options.get("use_t", False))
        np.testing.assert_allclose([ours.intercept[j], ours.slope[j]], fit.params, rtol=RTOL)
        np.testing.assert_allclose(ours.se[j], fit.bse[1], rtol=RTOL)
        np.testing.assert_allclose(ours.p[j], fit.pvalues[1], rtol=RTOL)
        np.testing.assert_allclose(ours.r2[j], fit.rsquared, rtol=RTOL)


def test_hac_constant_neuron_has_no_evidence(rng):
    x = rng.normal(size=(10, 3))
    x[:, 2] = 1.0
    fit = hac_regression(x, rng.normal(size=10), maxlags=1)
    assert fit.p[2] == 1.0 and np.isnan(fit.slope[2])


@pytest.mark.parametrize("method", ["fdr_bh", "fdr_by", "bonferroni"])
def test_adjust_pvalues_is_multipletests(rng, method):
    p = rng.uniform(size=(3, 50)) ** 3
    np.testing.assert_allclose(adjust_pvalues(p, method).ravel(), multipletests(p.ravel(), method=method)[1])


def test_minimum_effect_and_tost_match_statsmodels_and_scipy(rng):
    x = rng.normal(0.0, 1.0, (30, 200)) + rng.normal(0, 0.6, 200)  # effects spanning the bound
    delta = rng.uniform(0.0, 0.8, 200)
    result = min_effect_tests(x, delta)
    for j in _sample(rng, 200):
        p_tost, _, _ = ttost_paired(x[:, j], np.zeros(30), -delta[j], delta[j])
        np.testing.assert_allclose(result.p_equivalent[j], p_tost, rtol=RTOL)
        above = stats.ttest_1samp(x[:, j] - delta[j], 0.0, alternative="greater").pvalue
        below = stats.ttest_1samp(x[:, j] + delta[j], 0.0, alternative="less").pvalue
        np.testing.assert_allclose(result.p_changed[j], min(1.0, 2 * min(above, below)), rtol=RTOL)


def test_minimum_effect_with_zero_delta_is_the_paired_t_test(rng):
    x = rng.normal(0.2, 1.0, (25, 50))
    np.testing.assert_allclose(min_effect_tests(x, 0.0).p_changed, stats.ttest_1samp(x, 0.0).pvalue, rtol=RTOL)


def test_minimum_effect_exact_answers_without_spread():
    x = np.tile(np.array([0.5, 0.125, 0.0]), (6, 1))  # every prompt agrees (binary fractions: sd exactly 0)
    result = min_effect_tests(x, np.array([0.25, 0.25, 0.0]))
    assert result.p_changed.tolist() == [0.0, 1.0, 1.0]
    assert result.p_equivalent.tolist() == [1.0, 0.0, 1.0]


def test_calls_are_exclusive_and_follow_q():
    q_changed = np.array([0.01, 0.2, 0.3, 0.04])
    q_equivalent = np.array([0.6, 0.01, 0.5, 0.9])
    assert calls(q_changed, q_equivalent, 0.05).tolist() == ["changed", "equivalent", "inconclusive", "changed"]


def test_diff_columns_by_hand():
    """Every column of one contrast recomputed from the simulated cells with scipy and numpy."""
    sim = simulate_study(np.random.default_rng(3), n_prompts=30, d_mlp=40, n_planted=5)
    result = diff_inputs(sim.inputs, emoji_design(writing=False), DiffConfig(delta=0.3))
    table = result.table.sort_values(["layer", "index"])
    cells = {k: v.reshape(len(v), -1).astype(np.float64) for k, v in sim.inputs.cells.items()}
    contrast = (cells["merged", "emoji", "marked_mean"] - cells["base", "emoji", "marked_mean"]) \
        - (cells["merged", "filler-a", "marked_mean"] - cells["base", "filler-a", "marked_mean"])
    scale = sim.inputs.scales["filler-a"].ravel()
    np.testing.assert_allclose(table["emoji_reading"], contrast.mean(0), rtol=1e-9)
    np.testing.assert_allclose(table["emoji_reading_std"], contrast.mean(0) / scale, rtol=1e-9)
    np.testing.assert_allclose(table["d_emoji_reading"], contrast.mean(0) / contrast.std(0, ddof=1), rtol=1e-9)
    for j in range(0, contrast.shape[1], 7):
        p_tost, _, _ = ttost_paired(contrast[:, j], np.zeros(len(contrast)), -0.3 * scale[j], 0.3 * scale[j])
        np.testing.assert_allclose(table["p_equiv_emoji_reading"].iloc[j], p_tost, rtol=RTOL)
    np.testing.assert_allclose(table["q_emoji_reading"], multipletests(table["p_emoji_reading"], method="fdr_bh")[1])
    # token scale: the SD over content tokens pooled over both models, from the token statistics
    stats_b, stats_m = sim.inputs.stats["base", "filler-a"], sim.inputs.stats["merged", "filler-a"]
    pooled = np.sqrt((stats_b.content.var + stats_m.content.var) / 2).ravel()
    np.testing.assert_allclose(scale, np.maximum(pooled, 0.01 * np.median(pooled.reshape(2, -1), 1).repeat(40)))
    change_abs = cells["merged", "emoji", "content_absmean"] - cells["base", "emoji", "content_absmean"]
    np.testing.assert_allclose(table["change"], change_abs.mean(0), rtol=1e-9)
    np.testing.assert_allclose(table["fold"], cells["merged", "emoji", "content_absmean"].mean(0)
                               / cells["base", "emoji", "content_absmean"].mean(0), rtol=1e-9)
