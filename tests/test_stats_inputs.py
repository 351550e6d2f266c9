"""Caches that do not belong together are refused with an error that names the mismatch."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from stats_helpers import synthetic_inputs, write_cache, write_diff_caches

from interp.stats import ClassifyConfig, DiffConfig, DiffInputs, diff
from interp.stats.loading import load_diff_inputs
from interp.stats.regress import RegressConfig, regress


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return write_diff_caches(tmp_path, synthetic_inputs(np.random.default_rng(0), n_pairs=8, d_mlp=6, n_neutral=5))


def _rewrite(path: Path, **changes) -> None:
    """Rewrite the cache at ``path`` with some of its fields changed."""
    from activations.store import open_cache

    with open_cache(path) as cache:
        acts, ids, attrs = cache.reduction("mean"), list(cache.prompt_ids), cache.attrs
    fields = {"acts": acts, "ids": ids, "weights_hash": attrs["weights_hash"], "model_spec": attrs["model_spec"],
              "prompt_set": attrs["prompt_set"], "template": attrs["template"]}
    fields.update(changes)
    write_cache(path, fields.pop("acts"), fields.pop("ids"), **fields)


def test_matching_caches_load(dirs):
    base, merged = dirs
    inputs = load_diff_inputs(base, merged)
    assert inputs.base_emoji.shape == (8, 2, 6) and inputs.has_neutral
    assert inputs.provenance["models"]["merged"]["weights_hash"] == "merged-hash"


def test_mapping_form_without_neutral(dirs):
    base, merged = dirs
    result = diff({"emoji": base / "emoji.h5", "emoji-free": base / "emoji-free.h5"},
                  {"emoji": merged / "emoji.h5", "emoji-free": merged / "emoji-free.h5"})
    assert "p_interaction_neutral" not in result.table.columns and len(result.table) == 12


@pytest.mark.parametrize(
    ("target", "changes", "message"),
    [
        ("merged/emoji.h5", {"ids": [f"x{i}" for i in range(8)]}, "hold different prompts"),
        ("merged/emoji.h5", {"ids": [f"e{i:03d}" for i in reversed(range(8))]}, "in a different order"),
        ("base/emoji-free.h5", {"ids": [f"e{i:03d}" for i in range(1, 9)]}, "hold different prompts"),
        ("merged/neutral.h5", {"acts": np.zeros((4, 2, 6), np.float32), "ids": ["n0", "n1", "n2", "n3"]},
         "hold different prompts"),
        ("merged/emoji.h5", {"template": "user"}, "template"),
        ("base/neutral.h5", {"weights_hash": "other-hash"}, "different weights"),
        ("merged/emoji.h5", {"acts": np.zeros((8, 2, 5), np.float32)}, "d_mlp"),
        ("merged/emoji-free.h5", {"acts": {"max": np.zeros((8, 2, 6), np.float32)}}, "not 'mean'"),
        ("merged/emoji.h5", {"acts": np.full((8, 2, 6), np.nan, np.float32)}, "NaN"),
    ],
)
def test_mismatch_is_refused(dirs, target, changes, message):
    _rewrite(dirs[0].parent / target, **changes)
    with pytest.raises(ValueError, match=message):
        load_diff_inputs(*dirs)


def test_layers_mismatch(dirs):
    with h5py.File(dirs[1] / "emoji.h5", "r+") as f:
        f.attrs["layers"] = np.array([0, 5])
    with pytest.raises(ValueError, match="layers"):
        load_diff_inputs(*dirs)


def test_same_weights_for_both_models(dirs):
    for name in ("emoji", "emoji-free", "neutral"):
        _rewrite(dirs[1] / f"{name}.h5", weights_hash="base-hash")
    with pytest.raises(ValueError, match="same weights"):
        load_diff_inputs(*dirs)


def test_missing_sets(dirs):
    base, merged = dirs
    (merged / "neutral.h5").unlink()
    with pytest.raises(ValueError, match="only the base model has a neutral cache"):
        load_diff_inputs(base, merged)
    (merged / "emoji-free.h5").unlink()
    with pytest.raises(FileNotFoundError, match="emoji-free"):
        load_diff_inputs(base, merged)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_diff_inputs(base, merged.parent / "nowhere")
    with pytest.raises(ValueError, match="unknown prompt sets"):
        load_diff_inputs({"emoji": "a", "twin": "b"}, merged)


def test_array_inputs_are_checked():
    ok = np.zeros((4, 2, 3))
    with pytest.raises(ValueError, match="merged_twin has shape"):
        DiffInputs(ok, ok, ok, np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match="both models or for neither"):
        DiffInputs(ok, ok, ok, ok, base_neutral=ok)
    with pytest.raises(ValueError, match="at least 2 prompt pairs"):
        DiffInputs(*(np.zeros((1, 2, 3)),) * 4)
    with pytest.raises(ValueError, match="layer numbers"):
        DiffInputs(ok, ok, ok, ok, layers=(1,))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DiffConfig(alpha=1.5), "alpha"),
        (lambda: DiffConfig(correction="holm"), "unknown correction"),
        (lambda: DiffConfig(reduction="median"), "reduction"),
        (lambda: DiffConfig(prompt_effects="random"), "prompt_effects"),
        (lambda: ClassifyConfig(quiet_quantile=0.0), "quiet_quantile"),
        (lambda: ClassifyConfig(fold=1.0), "fold"),
        (lambda: RegressConfig(maxlags=-1), "maxlags"),
    ],
)
def test_configs_validate(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_config_accepts_short_correction_names():
    assert DiffConfig(correction="by").correction == "fdr_by"


def test_regress_refuses_mismatched_checkpoints(tmp_path):
    acts = np.zeros((4, 2, 3), np.float32)
    first = write_cache(tmp_path / "c0.h5", acts, ["a", "b", "c", "d"])
    second = write_cache(tmp_path / "c1.h5", acts, ["a", "b", "c", "e"])
    third = write_cache(tmp_path / "c2.h5", acts, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="one metric per cache"):
        regress([first, third], [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="hold different prompts"):
        regress([first, second, third], [0.0, 0.1, 0.2])
