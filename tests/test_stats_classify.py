"""Class definitions on hand-built calls, firing rates, outliers, and the hypergeometric overlap test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import torch
from stats_helpers import simulate_study

from activations.running import RunningStats, TokenStats, abs_histogram, share_above
from interp.stats import ClassifyConfig, DiffConfig, classify_neurons, diff_inputs, emoji_design, find_outliers
from interp.stats.classify import count_by_layer, firing_rates
from interp.stats.overlap import overlap_counts, overlap_masks, overlap_sets

# name: (change call, change estimate, base mean |a|, merged mean |a|, base firing, merged firing,
#        reading call, expected label)
CASES = {
    "quiet, turned on": ("changed", 0.5, 0.001, 0.5, 0.0, 0.30, "inconclusive", "activated"),
    "quiet, turned on weakly": ("changed", 0.01, 0.001, 0.011, 0.0, 0.02, "inconclusive", "amplified"),
    "quiet, change inconclusive": ("inconclusive", 0.5, 0.002, 0.5, 0.0, 0.30, "inconclusive", ""),
    "quiet, on, emoji-specific": ("changed", 0.6, 0.004, 0.6, 0.005, 0.40, "changed", "activated"),
    "active, x2.5": ("changed", 1.5, 1.0, 2.5, 0.3, 0.5, "equivalent", "amplified"),
    "active, exactly x2": ("changed", 1.0, 1.0, 2.0, 0.3, 0.5, "equivalent", "amplified"),
    "active, x1.5": ("changed", 0.5, 1.0, 1.5, 0.3, 0.4, "equivalent", ""),
    "active, x2.5 equivalent": ("equivalent", 1.5, 1.0, 2.5, 0.3, 0.5, "equivalent", ""),
    "active, /2.5": ("changed", -0.6, 1.0, 0.4, 0.3, 0.1, "equivalent", "suppressed"),
    "active, silenced": ("changed", -1.0, 1.0, 0.0, 0.3, 0.0, "equivalent", "suppressed"),
    "active, emoji-specific only": ("equivalent", 0.0, 1.0, 1.0, 0.3, 0.3, "changed", "emoji_specific"),
}


def _classify(config: ClassifyConfig = ClassifyConfig()):
    rows = list(CASES.values())
    column = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    calls = {"change": column(0).astype(object), "emoji_reading": column(6).astype(object)}
    estimates = {"change": column(1).astype(float), "emoji_reading": np.zeros(len(rows))}
    return classify_neurons(calls, estimates, ("emoji_reading",), "change", (column(2), column(3)),
                            (column(4), column(5)), config, "emoji_specific")


def test_classes_on_hand_built_calls():
    result = _classify()
    assert dict(zip(CASES, result.labels)) == {name: case[-1] for name, case in CASES.items()}
    assert result.flags["emoji_specific"].tolist()[3]  # in two classes at once
    assert result.flags.sum().to_dict() == {"activated": 2, "amplified": 3, "suppressed": 2, "emoji_specific": 2}


def test_fold_and_rates_change_classes():
    strict = _classify(ClassifyConfig(fold=3.0))
    assert dict(zip(CASES, strict.labels))["active, x2.5"] == ""
    assert dict(zip(CASES, strict.labels))["active, silenced"] == "suppressed"
    lenient = _classify(ClassifyConfig(quiet_rate=0.0, active_rate=0.01))
    assert dict(zip(CASES, lenient.labels))["quiet, on, emoji-specific"] == "amplified"  # base fired on 0.5%


def test_share_above_reads_the_histogram_like_a_direct_count():
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.lognormal(-2, 2, (20000, 3)) * rng.choice([-1, 1], (20000, 3))).float()
    hist = abs_histogram(values)
    for threshold in (1e-3, 0.05, 0.3, 2.0):
        direct = (values.abs() > threshold).float().mean(0).numpy()
        np.testing.assert_allclose(share_above(hist, np.full(3, threshold)), direct, atol=0.02)
    assert share_above(hist, np.full(3, 1e6)).tolist() == [0.0, 0.0, 0.0]


def test_firing_rates_use_the_pooled_rms():
    base, merged = TokenStats((1, 2)), TokenStats((1, 2))
    quiet, loud = torch.full((100, 1), 0.01), torch.full((100, 1), 3.0)  # 3.0: inside a histogram bin
    for token_stats, tokens in ((base, torch.cat([quiet, loud], 1)), (merged, torch.cat([loud, loud], 1))):
        token_stats.content = RunningStats.from_batch(tokens.reshape(100, 1, 2))
        token_stats.abs_hist = abs_histogram(tokens)[None]
    base_rate, merged_rate = firing_rates(base, merged, 1.0)
    # neuron 0: pooled RMS ~ 2.1, so base (0.01) never fires and merged (3.0) always does
    assert base_rate[0, 0] == 0.0 and merged_rate[0, 0] == 1.0


def test_outliers_from_token_statistics():
    stats = TokenStats((2, 50), histogram=False)
    stats.absmax_all[:] = 1.0
    stats.absmax_content[:] = 1.0
    stats.absmax_all[0, 3] = 3000.0  # massive, at position 0 only
    stats.absmax_content[0, 3] = 0.05
    stats.pos0_abs_sum[0, 3], stats.pos0_count = 3000.0 * 4, 4
    stats.absmax_all[1, 7] = 50.0  # large but not two orders of magnitude above its layer
    found = find_outliers([stats])
    assert np.argwhere(found.any).tolist() == [[0, 3]]
    assert found.massive[0, 3] and found.pos0_only[0, 3] and not found.massive[1, 7]
    assert found.massive_ratio[0, 3] == pytest.approx(3000.0)


def test_diff_excludes_outliers_from_the_flagged_set():
    sim = simulate_study(np.random.default_rng(4), n_prompts=30, d_mlp=40, n_planted=4, shift=3.0)
    stats = sim.inputs.stats["merged", "emoji"]
    layer, index = divmod(int(sim.planted[0]), 40)
    stats.absmax_all[layer, index] = 1e4  # make a planted (truly emoji-specific) neuron massive
    result = diff_inputs(sim.inputs, emoji_design(writing=False), DiffConfig())
    row = result.table[(result.table["layer"] == layer) & (result.table["index"] == index)].iloc[0]
    assert row["is_emoji_specific"] and row["outlier"] and not row["flagged"]
    assert (layer, index) not in result.flagged()
    kept = diff_inputs(sim.inputs, emoji_design(writing=False), DiffConfig(exclude_outliers=False))
    assert (layer, index) in kept.flagged()
    counts = result.counts_by_layer()
    assert counts["neurons"].tolist() == [40, 40] and counts["flagged"].sum() == result.counts()["flagged"]


def test_count_by_layer_counts_every_class_a_neuron_is_in():
    flags = pd.DataFrame({"a": [True, True, False], "b": [True, False, False]})
    counts = count_by_layer(pd.Series([0, 0, 1]), flags)
    assert counts.to_dict("index") == {0: {"neurons": 2, "a": 2, "b": 1}, 1: {"neurons": 1, "a": 0, "b": 0}}


def test_overlap_matches_fisher_exact_and_counts():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=1000) < 0.1
    b = a & (rng.uniform(size=1000) < 0.5) | (rng.uniform(size=1000) < 0.05)  # enriched in a
    result = overlap_masks(a, b, "a", "b")
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    assert result.p_enrichment == pytest.approx(stats.fisher_exact(table, alternative="greater").pvalue, rel=1e-9)
    assert result.p_depletion == pytest.approx(stats.fisher_exact(table, alternative="less").pvalue, rel=1e-9)
    assert result.expected == pytest.approx(a.sum() * b.sum() / 1000)
    assert result.p_enrichment < 1e-10 and result.fold_enrichment > 3


def test_overlap_sets_and_bad_inputs():
    universe = [(layer, index) for layer in range(2) for index in range(10)]
    result = overlap_sets({(0, 1), (0, 2)}, {(0, 2), (1, 5)}, universe)
    assert (result.n_universe, result.n_a, result.n_b, result.n_overlap) == (20, 2, 2, 1)
    with pytest.raises(ValueError, match="not in the universe"):
        overlap_sets({(5, 0)}, set(), universe)
    with pytest.raises(ValueError, match="inconsistent overlap counts"):
        overlap_counts(10, 3, 4, 5)
    assert overlap_counts(10, 0, 0, 0).p_enrichment == 1.0
