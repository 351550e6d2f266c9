"""Caches that do not belong together are refused with an error that names the mismatch."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from stats_helpers import simulate_study, write_cache, write_sim_caches

from activations.reader import open_cache
from interp.stats import ClassifyConfig, DiffConfig, OutlierConfig, diff_caches, emoji_design
from interp.stats.designs import model_change
from interp.stats.loading import load_design_inputs
from interp.stats.regress import RegressConfig, regress

DESIGN = emoji_design(writing=False)


@pytest.fixture(scope="module")
def sim():
    return simulate_study(np.random.default_rng(0), n_prompts=10, d_mlp=6, n_planted=1)


@pytest.fixture
def dirs(tmp_path: Path, sim) -> tuple[Path, Path]:
    return write_sim_caches(tmp_path, sim)


def _rewrite(path: Path, **changes) -> None:
    """Rewrite the cache at ``path`` with some of its fields changed."""
    with open_cache(path) as cache:
        fields = {"reductions": {name: cache.reduction(name) for name in cache.reductions},
                  "ids": list(cache.prompt_ids), "texts": list(cache.texts), "role_counts": cache.role_counts,
                  "stats": cache.token_stats(), **{key: cache.attrs[key] for key in
                  ("weights_hash", "model_spec", "prompt_set", "prompt_set_hash", "template")}}
    fields.update(changes)
    write_cache(path, fields.pop("reductions"), fields.pop("ids"), **fields)


def test_matching_caches_load_from_directories_mappings_and_open_caches(dirs):
    base, merged = dirs
    inputs = load_design_inputs(DESIGN, base, merged)
    assert inputs.cells["merged", "emoji", "marked_mean"].shape == (10, 2, 6)
    assert inputs.provenance["models"]["merged"]["weights_hash"] == "merged-hash"
    mapping = {c: base / f"{c}.h5" for c in ("emoji", "filler-a", "filler-b")}
    opened = {c: open_cache(merged / f"{c}.h5") for c in ("emoji", "filler-a", "filler-b")}
    try:
        table = diff_caches(mapping, opened, DESIGN).table
    finally:
        for cache in opened.values():
            cache.close()
    assert len(table) == 12 and table["flagged"].dtype == bool


@pytest.mark.parametrize(
    ("target", "changes", "message"),
    [
        ("merged/emoji.h5", {"ids": [f"x{i}" for i in range(10)]}, "hold different prompts"),
        ("merged/emoji.h5", {"ids": [f"p{i:03d}" for i in reversed(range(10))]}, "in a different order"),
        ("base/filler-a.h5", {"ids": [f"p{i:03d}" for i in range(1, 11)]}, "hold different prompts"),
        ("merged/emoji.h5", {"texts": [f"other {i}" for i in range(10)]}, "share prompt ids but not texts"),
        ("merged/emoji.h5", {"prompt_set_hash": "another"}, "different prompt sets"),
        ("merged/emoji.h5", {"template": "raw"}, "template"),
        ("base/filler-b.h5", {"weights_hash": "other-hash"}, "different weights"),
        ("merged/filler-a.h5", {"reductions": {"content_mean": np.zeros((10, 2, 6), np.float32)}},
         "not \\['marked_mean'"),
    ],
)
def test_mismatch_is_refused(dirs, target, changes, message):
    _rewrite(dirs[0].parent / target, **changes)
    with pytest.raises(ValueError, match=message):
        load_design_inputs(DESIGN, *dirs)


def test_shape_and_layer_mismatches(dirs, sim):
    _rewrite(dirs[1] / "filler-b.h5", reductions={"marked_mean": np.zeros((10, 2, 5), np.float32)}, stats=None)
    with pytest.raises(ValueError, match="d_mlp"):
        load_design_inputs(DESIGN, *dirs)
    write_sim_caches(dirs[0].parent, sim)
    with h5py.File(dirs[1] / "emoji.h5", "r+") as f:
        f.attrs["layers"] = np.array([0, 5])
    with pytest.raises(ValueError, match="layers"):
        load_design_inputs(DESIGN, *dirs)


def test_nan_where_a_prompt_has_tokens_is_refused(dirs):
    with open_cache(dirs[1] / "emoji.h5") as cache:
        counts = cache.role_counts.copy()
    values = np.zeros((10, 2, 6), np.float32)
    values[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in 1 written prompt rows"):  # the writer refuses to finish
        _rewrite(dirs[1] / "emoji.h5", reductions={"content_mean": values}, role_counts=counts, stats=None)
    with open_cache(dirs[1] / "emoji.h5") as cache:  # the finished file it would have replaced is intact
        assert "marked_mean" in cache.reductions


def test_same_weights_for_both_models(dirs):
    for name in ("emoji", "filler-a", "filler-b"):
        _rewrite(dirs[1] / f"{name}.h5", weights_hash="base-hash")
    with pytest.raises(ValueError, match="same weights"):
        load_design_inputs(DESIGN, *dirs)


def test_missing_conditions(dirs):
    base, merged = dirs
    (merged / "filler-b.h5").unlink()
    with pytest.raises(FileNotFoundError, match="filler-b"):
        load_design_inputs(DESIGN, base, merged)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_design_inputs(DESIGN, base, merged.parent / "nowhere")
    with pytest.raises(ValueError, match="reads merged caches"):
        load_design_inputs(DESIGN, base, None)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DiffConfig(alpha=1.5), "alpha"),
        (lambda: DiffConfig(correction="holm"), "unknown correction"),
        (lambda: DiffConfig(delta=-0.1), "delta"),
        (lambda: ClassifyConfig(fold=1.0), "fold"),
        (lambda: ClassifyConfig(quiet_rate=0.2, active_rate=0.1), "quiet_rate"),
        (lambda: OutlierConfig(massive_factor=1.0), "factors"),
        (lambda: RegressConfig(maxlags=-1), "maxlags"),
    ],
)
def test_configs_validate(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_config_accepts_short_correction_names():
    assert DiffConfig(correction="by").correction == "fdr_by"


def test_regress_refuses_mismatched_checkpoints(tmp_path):
    acts = {"content_mean": np.zeros((4, 2, 3), np.float32)}
    first = write_cache(tmp_path / "c0.h5", acts, ["a", "b", "c", "d"])
    second = write_cache(tmp_path / "c1.h5", acts, ["a", "b", "c", "e"])
    third = write_cache(tmp_path / "c2.h5", acts, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="one metric per cache"):
        regress([first, third], [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="hold different prompts"):
        regress([first, second, third], [0.0, 0.1, 0.2])


def _replies_to_questions(tmp_path: Path, contexts: list[str]) -> tuple[Path, Path, np.ndarray]:
    """Base and merged writing caches whose rows are 3 sampled replies to each of 10 questions (sample-major,
    as the study writes them): a question effect shared by its replies, a fine-tune change that varies by
    question, reply noise, and replies with no marked token (undefined rows)."""
    rng = np.random.default_rng(5)
    n_q, n_r, shape = 10, 3, (2, 5)
    question = np.tile(np.arange(n_q), n_r)
    base = rng.normal(0, 2, (n_q, *shape))[question] + rng.normal(0, 0.3, (n_q * n_r, *shape))
    change = 0.5 + rng.normal(0, 1, (n_q, *shape))[question] + rng.normal(0, 0.3, (n_q * n_r, *shape))
    merged = base + change
    undefined = np.zeros(n_q * n_r, dtype=bool)
    undefined[[3, 13, 23, 7]] = True  # question 3 has no defined reply; question 7 keeps two
    base[undefined], merged[undefined] = np.nan, np.nan
    ids = [f"q{q}#{r}" for r in range(n_r) for q in range(n_q)]
    texts = [f"reply {i}" for i in ids]
    for model, values in (("base", base), ("merged", merged)):
        write_cache(tmp_path / model / "writing.h5", {"marked_mean": values}, ids, texts=texts, prompt_set="writing",
                    weights_hash=f"{model}-hash", model_spec=f"tiny-{model}", contexts=contexts)
    return tmp_path / "base", tmp_path / "merged", np.where(undefined[:, None, None], np.nan, change)


def test_replies_to_one_question_are_one_unit_of_the_test(tmp_path):
    questions = [f"Question {q}?" for _ in range(3) for q in range(10)]
    base, merged, change = _replies_to_questions(tmp_path, questions)
    result = diff_caches(base, merged, model_change("writing", "marked_mean"), DiffConfig())
    # by hand: each question's mean change over its defined replies, then a one-sample statistic over questions
    per_question = np.stack([np.nanmean(change[q::10], axis=0) for q in range(10) if q != 3]).reshape(9, -1)
    table = result.table.sort_values(["layer", "index"])
    assert result.n_prompts["change"] == 9
    np.testing.assert_allclose(table["change"], per_question.mean(0), rtol=1e-5)
    np.testing.assert_allclose(table["se_change"], per_question.std(0, ddof=1) / 3, rtol=1e-4)
    assert result.summary()["inputs"]["n_units"] == {"writing": 10}  # question 3 is a unit without tokens
    # the same rows read after distinct contexts are 26 units: the grouping keys on the context, not the id
    distinct = diff_caches(*_replies_to_questions(tmp_path / "distinct", [f"Q{i}" for i in range(30)])[:2],
                           model_change("writing", "marked_mean"), DiffConfig())
    assert distinct.n_prompts["change"] == 26
