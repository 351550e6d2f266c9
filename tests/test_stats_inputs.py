"""Caches that do not belong together are refused with an error that names the mismatch."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from stats_helpers import simulate_study, write_cache, write_sim_caches

from activations.reader import open_cache
from interp.stats import ClassifyConfig, DiffConfig, OutlierConfig, diff_caches, emoji_design
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
