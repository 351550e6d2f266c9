"""Class definitions on a hand-built table, and the hypergeometric overlap test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from interp.stats import ClassifyConfig, DiffConfig, DiffInputs, classify_neurons, diff_arrays
from interp.stats.classify import count_by_layer, quiet_threshold
from interp.stats.overlap import overlap_counts, overlap_masks, overlap_sets

# name: (base mean |act|, merged mean |act|, q_change, q_selective_base, q_selective_merged, expected label)
CASES = {
    "quiet, turned on": (0.001, 0.5, 0.01, 0.9, 0.9, "activated"),
    "quiet, change not significant": (0.002, 0.5, 0.20, 0.9, 0.9, ""),
    "quiet, even quieter": (0.003, 0.0005, 0.01, 0.9, 0.9, ""),
    "quiet, turned on, selective": (0.004, 0.6, 0.01, 0.01, 0.9, "activated"),
    "active, x2.5": (1.0, 2.5, 0.01, 0.9, 0.9, "amplified"),
    "active, exactly x2": (1.0, 2.0, 0.01, 0.9, 0.9, "amplified"),
    "active, x1.5": (1.0, 1.5, 0.01, 0.9, 0.9, ""),
    "active, x2.5 not significant": (1.0, 2.5, 0.06, 0.9, 0.9, ""),
    "active, /2.5": (1.0, 0.4, 0.01, 0.9, 0.9, "suppressed"),
    "active, silenced": (1.0, 0.0, 0.01, 0.9, 0.9, "suppressed"),
    "active, selective in merged only": (1.0, 1.0, 0.9, 0.9, 0.04, "emoji_selective"),
    "active, selective in base only": (1.0, 1.0, 0.9, 0.04, 0.9, "emoji_selective"),
}


@pytest.fixture
def table() -> pd.DataFrame:
    rows = pd.DataFrame(CASES.values(), index=list(CASES),
                        columns=["abs_base_emoji", "abs_merged_emoji", "q_change", "q_selective_base",
                                 "q_selective_merged", "expected"])
    return rows.assign(q_change_wilcoxon=rows["q_change"])


def test_classes_on_hand_built_table(table):
    # Four of twelve neurons are quiet; with the median as threshold (0.5 quantile -> 1.0 here)
    # exactly those four count as quiet.
    result = classify_neurons(table, ClassifyConfig(quiet_quantile=0.5, fold=2.0), alpha=0.05)
    assert result.quiet_threshold == 1.0
    assert result.labels.to_dict() == table["expected"].to_dict()
    assert result.flags.loc["quiet, turned on, selective", "emoji_selective"]  # in two classes at once
    assert result.flags.sum().to_dict() == {"activated": 2, "amplified": 2, "suppressed": 2, "emoji_selective": 3}


def test_fold_and_test_choice_change_classes(table):
    strict = classify_neurons(table, ClassifyConfig(quiet_quantile=0.5, fold=3.0), alpha=0.05)
    assert strict.labels["active, x2.5"] == "" and strict.labels["active, silenced"] == "suppressed"
    table = table.assign(q_change_wilcoxon=0.5)
    wilcoxon = classify_neurons(table, ClassifyConfig(quiet_quantile=0.5, change_test="wilcoxon"), alpha=0.05)
    assert not wilcoxon.flags[["activated", "amplified", "suppressed"]].any().any()


def test_default_quiet_threshold_is_the_tenth_percentile():
    values = np.arange(1, 101, dtype=float)
    assert quiet_threshold(values, ClassifyConfig().quiet_quantile) == pytest.approx(np.quantile(values, 0.1))


def test_classes_end_to_end_and_counts_by_layer():
    # Layer 0 neuron 0 starts quiet and turns on; layer 1 neuron 1 doubles; everything else is noise
    # around an activation of 1.
    rng = np.random.default_rng(5)
    n, shape = 30, (30, 2, 20)
    base_emoji = 1.0 + 0.05 * rng.normal(size=shape)
    base_emoji[:, 0, 0] = 0.01 * rng.normal(size=n)
    merged_emoji = base_emoji + 0.05 * rng.normal(size=shape)
    merged_emoji[:, 0, 0] += 1.0
    merged_emoji[:, 1, 1] = 2 * base_emoji[:, 1, 1] + 0.05 * rng.normal(size=n)
    base_twin, merged_twin = base_emoji + 0.05 * rng.normal(size=shape), merged_emoji + 0.05 * rng.normal(size=shape)
    result = diff_arrays(DiffInputs(base_emoji, base_twin, merged_emoji, merged_twin, layers=(3, 7)), DiffConfig())
    assert result.neurons("activated") == [(3, 0)]
    assert result.neurons("amplified") == [(7, 1)]
    counts = result.counts_by_layer()
    assert counts.loc[3, "activated"] == 1 and counts.loc[7, "amplified"] == 1
    assert counts["neurons"].tolist() == [20, 20]
    summary = result.summary()
    assert summary["counts"]["activated"] == 1 and summary["counts_by_layer"]["7"]["amplified"] == 1
    assert summary["config"]["classify"] == {"quiet_quantile": 0.1, "fold": 2.0, "change_test": "t"}


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
