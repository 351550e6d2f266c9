"""Capture under faults, in real processes: a second writer, a kill -9, a write that fails (file-size
limit standing in for a full disk: the kernel refuses the write the same way, with an errno)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from activations.capture import capture
from activations.reader import open_cache
from activations.store import partial_path

PROMPTS = [f"Prompt number {i} is about {'the sea 🌊' if i % 2 else 'taxes'} and little else." for i in range(24)]
ROOT = Path(__file__).resolve().parents[1]

# A capture that writes one batch, says so, then waits to be killed.
_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from activations import load_model
    from activations.capture import capture
    from activations.store import CacheWriter
    original = CacheWriter.write_batch
    def announce(self, *args, **kwargs):
        original(self, *args, **kwargs)
        print("batch", flush=True)
        time.sleep(600)
    CacheWriter.write_batch = announce
    prompts = sys.argv[2].split("|")
    capture(load_model("tiny-random-llama"), None, prompts, sys.argv[1], batch_size=4, template="raw")
""")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_second_writer_fails_clearly_and_the_first_ones_work_survives(tiny_llama, tmp_path) -> None:
    out = tmp_path / "acts.h5"
    first = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out), "|".join(PROMPTS)], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "batch", first.stderr.read()
        with pytest.raises(FileExistsError, match=rf"being written by another process \(pid {first.pid}\)"):
            capture(tiny_llama, None, PROMPTS, out, batch_size=4, template="raw")
        with pytest.raises(FileExistsError, match="another process"):  # overwrite does not break a live lock
            capture(tiny_llama, None, PROMPTS, out, batch_size=4, template="raw", overwrite=True)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with h5py.File(partial_path(out), "r") as f:  # untouched by the refused writer
        assert int(f.attrs["n_done"]) == 4 and not f.attrs["complete"]
    # the kernel dropped the killed writer's lock: a rerun resumes its partial file and finishes
    capture(tiny_llama, None, PROMPTS, out, batch_size=4, template="raw").close()
    capture(tiny_llama, None, PROMPTS, tmp_path / "whole.h5", batch_size=4, template="raw").close()
    with open_cache(out) as cache:
        assert len(cache) == len(PROMPTS)
    with h5py.File(out, "r") as resumed, h5py.File(tmp_path / "whole.h5", "r") as whole:
        np.testing.assert_array_equal(resumed["acts/content_mean"][()], whole["acts/content_mean"][()])


def _limited(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_failed_write_is_one_clear_error_and_a_rerun_resumes(tmp_path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "acts.h5"
    argv = [sys.executable, "-m", "interp.cli", "cache", "--model", "tiny-random-llama", "--prompts", str(prompts),
            "--out", str(out), "--batch-size", "4", "--store-tokens"]
    # Big enough to create the file and write a batch or two, too small for all 24 prompts' tokens.
    failed = subprocess.run(argv, env=_env(), capture_output=True, text=True, preexec_fn=_limited(400_000))
    assert failed.returncode == 1, failed.stderr[-2000:]
    errors = [line for line in failed.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "File too large" in errors[0] and "rerun" in errors[0], failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr and "Exception ignored" not in failed.stderr
    assert not out.exists()  # nothing unfinished under the final name
    finished = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    # the partial file is continued when HDF5 got its metadata out before the failure, else discarded
    assert f"resuming {partial_path(out)}" in finished.stderr or "discarding unreadable" in finished.stderr
    with open_cache(out) as cache:
        assert len(cache) == len(PROMPTS)
    with h5py.File(out, "r") as f:
        assert np.isfinite(f["acts/content_mean"][()]).all() and f["tokens/acts"].shape[0] == f["tokens/offsets"][-1]


def test_rows_that_never_reached_the_file_are_caught_before_the_cache_is_published(tiny_llama, tmp_path,
                                                                                     monkeypatch) -> None:
    from activations.store import CacheWriter

    original = CacheWriter._write_batch
    calls = []

    def losing_a_batch(self, reductions, *args):
        calls.append(1)
        if len(calls) == 2:  # as if this batch's rows were lost on the way to the disk
            reductions = {name: np.full_like(values, np.nan) for name, values in reductions.items()}
        return original(self, reductions, *args)

    monkeypatch.setattr(CacheWriter, "_write_batch", losing_a_batch)
    out = tmp_path / "acts.h5"
    with pytest.raises(ValueError, match="did not all reach the disk, so the partial file is removed: rerun"):
        capture(tiny_llama, None, PROMPTS, out, batch_size=4, template="raw")
    assert not out.exists() and not partial_path(out).exists()
    monkeypatch.setattr(CacheWriter, "_write_batch", original)
    with capture(tiny_llama, None, PROMPTS, out, batch_size=4, template="raw") as cache:  # the rerun starts over
        assert np.isfinite(cache.reduction("content_mean")).all()
