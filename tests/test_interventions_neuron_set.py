"""NeuronSet: construction from pairs and tables, per-layer tensors, matched random sets."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from interp.interventions import NeuronSet, flagged_set, ranked_neurons

WIDTHS = {0: 20, 1: 20, 2: 20}


def _table() -> pd.DataFrame:
    # ranked file order; rows with an empty class are unflagged and never candidates
    return pd.DataFrame(
        {
            "layer": [2, 0, 1, 2, 0, 1, 0],
            "index": [5, 3, 9, 1, 4, 2, 0],
            "interaction": [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0],
            "class": ["amplified", "activated", "", "emoji_selective", "suppressed", "amplified", ""],
        }
    )


def test_pairs_are_sorted_unique_and_grouped() -> None:
    neurons = NeuronSet.from_pairs([(2, 5), (0, 3), (2, 1)])
    assert neurons.neurons == ((0, 3), (2, 1), (2, 5))
    assert neurons == NeuronSet.from_pairs([(2, 1), (2, 5), (0, 3)])
    assert neurons.counts() == {0: 1, 2: 2}
    by_layer = neurons.by_layer()
    assert set(by_layer) == {0, 2} and torch.equal(by_layer[2], torch.tensor([1, 5]))
    assert (2, 5) in neurons and (1, 5) not in neurons
    with pytest.raises(ValueError, match="more than once"):
        NeuronSet.from_pairs([(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="negative"):
        NeuronSet.from_pairs([(0, -1)])


def test_top_k_from_table_and_csv_follow_rank_and_skip_unflagged(tmp_path) -> None:
    table = _table()
    assert ranked_neurons(table) == [(2, 5), (0, 3), (2, 1), (0, 4), (1, 2)]
    assert NeuronSet.from_table(table, 3) == NeuronSet.from_pairs([(2, 5), (0, 3), (2, 1)])
    assert len(NeuronSet.from_table(table, 3, flagged_only=False)) == 3
    assert (1, 9) in NeuronSet.from_table(table, 3, flagged_only=False)
    path = tmp_path / "neurons.csv"
    table.to_csv(path, index=False)
    assert NeuronSet.from_csv(path, 2) == NeuronSet.from_pairs([(2, 5), (0, 3)])
    assert flagged_set(pd.read_csv(path, keep_default_na=False)) == NeuronSet.from_table(table)
    with pytest.raises(ValueError, match="'index'"):
        NeuronSet.from_table(table.drop(columns="index"), 2)
    with pytest.raises(FileNotFoundError, match="interp diff"):
        NeuronSet.from_csv(tmp_path / "missing.csv", 2)


def test_random_matched_sets_match_counts_and_exclude_only_what_is_asked() -> None:
    flagged = NeuronSet.from_pairs([(0, 0), (0, 1), (0, 2), (2, 7)])
    exclude = flagged.union(NeuronSet.from_pairs([(0, 3), (2, 8)]))
    seen: dict[int, set[int]] = {0: set(), 2: set()}
    for seed in range(300):
        drawn = flagged.random_matched(WIDTHS, seed, exclude=exclude)
        assert drawn.counts() == flagged.counts()
        assert not set(drawn) & set(exclude)
        for layer, index in drawn:
            seen[layer].add(index)
    # nothing excluded wrongly: every eligible neuron of the matched layers turns up eventually
    assert seen[0] == set(range(4, 20)) and seen[2] == set(range(20)) - {7, 8}


def test_random_matched_sets_are_seeded_and_distinct() -> None:
    flagged = NeuronSet.from_pairs([(1, i) for i in range(5)])
    sets = flagged.random_matched_sets(WIDTHS, n_sets=5, seed=3, exclude=flagged)
    assert sets == flagged.random_matched_sets(WIDTHS, n_sets=5, seed=3, exclude=flagged)
    assert len(set(sets)) == 5
    assert sets != flagged.random_matched_sets(WIDTHS, n_sets=5, seed=4, exclude=flagged)


def test_random_matched_refuses_impossible_draws() -> None:
    full_layer = NeuronSet.from_pairs([(0, i) for i in range(15)])
    with pytest.raises(ValueError, match="cannot draw 15"):
        full_layer.random_matched(WIDTHS, 0, exclude=full_layer)
    with pytest.raises(ValueError, match="out of range"):
        NeuronSet.from_pairs([(0, 25)]).random_matched(WIDTHS, 0)


def test_table_rows_the_model_lacks_are_named_by_line(tmp_path) -> None:
    from interp.interventions.neuron_set import check_table_fits, read_neuron_table

    pd.DataFrame({"layer": [0, 3, 1, 2], "index": [19, 0, 20, 4]}).to_csv(tmp_path / "n.csv", index=False)
    table = read_neuron_table(tmp_path / "n.csv")
    with pytest.raises(ValueError, match=r"n\.csv names neurons the model does not have \(it has layers 0\.\.2 of 20 "
                                         r"neurons\) at line 3 \(layer 3, index 0\), line 4 \(layer 1, index 20\);"):
        check_table_fits(table, WIDTHS)
    check_table_fits(table.iloc[[0, 3]], WIDTHS)  # the rows that fit pass
