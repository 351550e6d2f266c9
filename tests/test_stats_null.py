"""The null fine-tune comparison (interp.stats.null) on simulated caches with a shared base model.

Both fine-tunes change 10 neurons' reading of emojis (a change any fine-tune of this kind makes, the
nuisance the null exists for) and share the general fine-tune structure of the simulation; only the
study's fine-tune changes 10 more. The null diff must flag the shared ones, the relative diff the
study's own ones and not the shared ones."""

from __future__ import annotations

import numpy as np
import pytest
from stats_helpers import simulate_study, write_sim_caches

from interp.stats import diff_caches
from interp.stats.designs import reading_design
from interp.stats.null import NullComparison, compare_to_null

DESIGN = reading_design("emoji", writing=False)
SHARED, OWN = np.arange(0, 10), np.arange(60, 70)


def _flagged(table) -> set[int]:
    rows = table[table["flagged"]]
    return set((rows["layer"] * 50 + rows["index"]).astype(int).tolist())


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("null")
    study = simulate_study(np.random.default_rng(0), n_prompts=60, d_mlp=50, planted=np.r_[SHARED, OWN],
                           merged_rng=np.random.default_rng(1))
    null = simulate_study(np.random.default_rng(0), n_prompts=60, d_mlp=50, planted=SHARED,
                          merged_rng=np.random.default_rng(2))
    base, tuned = write_sim_caches(root, study)
    _, null_dir = write_sim_caches(root / "n", null, tuned="null")
    return base, tuned, null_dir


def test_the_null_flags_the_shared_change_and_the_relative_diff_the_studys_own(dirs):
    base, tuned, null = dirs
    result = compare_to_null(base, tuned, null, DESIGN, null_label="null/sim")
    study_flags = _flagged(diff_caches(base, tuned, DESIGN).table)
    null_flags = _flagged(diff_caches(base, null, DESIGN).table)
    relative_flags = _flagged(diff_caches(null, tuned, DESIGN).table)
    assert len(study_flags & set(SHARED)) >= 8 and len(study_flags & set(OWN)) >= 8
    assert len(null_flags & set(SHARED)) >= 8 and len(null_flags & set(OWN)) <= 1
    assert len(relative_flags & set(OWN)) >= 8 and len(relative_flags & set(SHARED)) <= 1
    # the typed result agrees with the three diffs recomputed here
    assert result.study.classes["flagged"] == len(study_flags)
    assert result.null.classes["flagged"] == len(null_flags)
    assert result.relative.classes["flagged"] == len(relative_flags)
    assert result.shared_flagged == len(study_flags & null_flags)
    assert result.ratio() == pytest.approx(result.null.classes["emoji_specific"] / result.study.classes["emoji_specific"])
    assert 0.3 < result.ratio() < 0.8  # the null carries about half of the study's count here
    assert NullComparison.from_dict(result.to_dict()) == result
    assert "null/sim" in result.sentence()


def test_a_design_with_a_writing_contrast_is_refused(dirs):
    base, tuned, null = dirs
    with pytest.raises(ValueError, match="without the writing contrast"):
        compare_to_null(base, tuned, null, reading_design("emoji", writing=True))
