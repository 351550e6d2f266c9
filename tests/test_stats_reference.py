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
from statsmodels.stats.weightstats import ttest_ind

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


def test_effect_sizes_by_hand(rng):
    from interp.stats import DiffConfig, DiffInputs, diff_arrays

    cells = [rng.normal(1.0, 1.0, (12, 2, 5)) for _ in range(4)]
    cells[2] = cells[0] + rng.normal(0.5, 0.5, (12, 2, 5))
    table = diff_arrays(DiffInputs(*cells), DiffConfig()).table.sort_values(["layer", "index"])
    base_e, base_t, merged_e, merged_t = (c.reshape(12, -1) for c in cells)
    change, contrast = merged_e - base_e, (merged_e - base_e) - (merged_t - base_t)
    np.testing.assert_allclose(table["change"], change.mean(0), rtol=1e-12)
    np.testing.assert_allclose(table["d_change"], change.mean(0) / change.std(0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(table["d_interaction"], contrast.mean(0) / contrast.std(0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(table["selectivity_merged"], (merged_e - merged_t).mean(0), rtol=1e-12)
    expected_lfc = np.log2((np.abs(merged_e).mean(0) + 1e-3) / (np.abs(base_e).mean(0) + 1e-3))
    np.testing.assert_allclose(table["log2fc_abs"], expected_lfc, rtol=1e-12)
