"""The HDF5 store: Welford statistics against numpy, and the reader's errors on files it cannot use."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from activations.reader import open_cache
from activations.running import RunningStats


def test_running_stats_match_numpy_in_any_batching() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4, 5)).astype(np.float32) + 1e4  # offset tests cancellation
    stats = RunningStats((4, 5))
    for chunk in np.array_split(data, [7, 8, 300, 301, 999]):  # uneven, including one-row batches
        stats.update(chunk)
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mean, data.astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats.var, data.astype(np.float64).var(0, ddof=1), rtol=1e-5)


def test_running_stats_merge_equals_one_stream() -> None:
    rng = np.random.default_rng(1)
    left, right = rng.normal(size=(300, 6)), rng.normal(5.0, 3.0, size=(41, 6))
    merged = RunningStats.from_batch(torch.as_tensor(left))
    merged.merge(RunningStats.from_batch(right))
    merged.merge(RunningStats((6,)))  # an empty shard changes nothing
    whole = np.concatenate([left, right])
    np.testing.assert_allclose(merged.mean, whole.mean(0), rtol=1e-6)
    np.testing.assert_allclose(merged.var, whole.var(0, ddof=1), rtol=1e-5)
    empty_first = RunningStats((6,))
    empty_first.merge(merged)
    np.testing.assert_array_equal(empty_first.m2, merged.m2)
    with pytest.raises(ValueError, match="shape"):
        merged.merge(RunningStats((7,)))


def test_open_cache_errors_name_the_file_and_problem(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="interp cache"):
        open_cache(tmp_path / "absent.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5 at all\n")
    with pytest.raises(ValueError, match=r"notes\.h5 is not an HDF5 file"):
        open_cache(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ValueError, match=r"foreign\.h5 is an HDF5 file but not a neurodiff activation cache"):
        open_cache(foreign)
