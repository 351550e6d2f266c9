"""torch.distributed on CPU (gloo, 2 processes under torchrun): sharded capture + merge equals a
single-process capture, and the causal conditions split across ranks equal the single-process ones."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed_worker import conditions

from activations import distributed
from activations.capture import capture
from activations.reader import open_cache
from activations.shards import capture_shard, merge_shards, shard_plan

WORKER = Path(__file__).with_name("distributed_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(mode: str, out: Path, nproc: int = 2) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
               "127.0.0.1", "--master-port", str(_free_port()), str(WORKER), mode, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_blocks_tile_the_work_in_order() -> None:
    assert distributed.block_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert distributed.block_bounds(1, 3) == [(0, 1), (1, 1), (1, 1)]
    plan = shard_plan(50, 3, 16)  # 4 batches over 3 ranks: whole batches only
    assert [(b.start, b.stop) for b in plan] == [(0, 32), (32, 48), (48, 50)]
    items = list(range(7))
    shares = [distributed.my_stride(items, distributed.World(r, 3)) for r in range(3)]
    assert sorted(x for share in shares for x in share) == items


def _assert_same_cache(single, merged) -> None:
    assert merged.prompt_ids == single.prompt_ids and merged.texts == single.texts
    assert merged.attrs["prompt_set_hash"] == single.attrs["prompt_set_hash"]
    assert merged.attrs["weights_hash"] == single.attrs["weights_hash"]
    for name in single.reductions:
        a, b = single.reduction(name), merged.reduction(name)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(merged.role_counts, single.role_counts)
    for name in ("ids", "roles", "offsets"):
        np.testing.assert_array_equal(merged._file[f"tokens/{name}"][()], single._file[f"tokens/{name}"][()])
    np.testing.assert_allclose(merged._file["tokens/acts"][()], single._file["tokens/acts"][()], rtol=0, atol=1e-3)
    s, m = single.token_stats(), merged.token_stats()
    for scope in ("all", "content"):
        one, two = getattr(s, scope), getattr(m, scope)
        assert one.count == two.count
        np.testing.assert_allclose(two.mean, one.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(two.m2, one.m2, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(m.abs_hist, s.abs_hist)
    np.testing.assert_array_equal(m.absmax_all, s.absmax_all)
    assert m.pos0_count == s.pos0_count


def test_two_rank_capture_and_merge_equal_one_process(tiny_llama, tmp_path) -> None:
    _torchrun("capture", tmp_path / "two.h5")
    assert not list(tmp_path.glob("*shard*"))  # merged, verified, then removed
    with capture(tiny_llama, None, "emoji", tmp_path / "one.h5", batch_size=16, store_tokens=True) as single, \
            open_cache(tmp_path / "two.h5") as merged:
        _assert_same_cache(single, merged)


def test_merge_in_one_process_checks_the_shards(tiny_llama, tmp_path) -> None:
    out = tmp_path / "acts.h5"
    for rank in (0, 2):  # rank 1 of 3 never ran
        capture_shard(tiny_llama, None, "emoji", out, rank, 3, batch_size=32)
    with pytest.raises(ValueError, match=r"ranks \[1\] missing"):
        merge_shards(out)
    capture_shard(tiny_llama, None, "emoji", out, 1, 3, batch_size=32)
    assert capture_shard(tiny_llama, None, "emoji", out, 1, 3, batch_size=32) is not None  # a rerun reuses it
    with pytest.raises(FileExistsError, match="shard of another capture"):
        capture_shard(tiny_llama, None, "neutral", out, 1, 3, batch_size=32)
    with merge_shards(out) as merged, capture(tiny_llama, None, "emoji", None, batch_size=32) as single:
        assert merged.prompt_ids == single.prompt_ids
        for name in single.reductions:
            np.testing.assert_allclose(merged.reduction(name), single.reduction(name), rtol=0, atol=1e-6)


def test_two_rank_conditions_equal_one_process(tiny_llama, tmp_path, monkeypatch) -> None:
    _torchrun("conditions", tmp_path / "two.pkl")
    with open(tmp_path / "two.pkl", "rb") as handle:
        two = pickle.load(handle)
    import interp.causal.proxy as proxy

    counted, measure = [0], proxy._measure_group

    def counting(*args, **kwargs):
        counted[0] += 1
        return measure(*args, **kwargs)

    monkeypatch.setattr(proxy, "_measure_group", counting)
    one = conditions(tiny_llama)
    # the work was split, not repeated: each rank measured some groups, together all of them once
    assert min(two["groups_per_rank"]) > 0 and sum(two["groups_per_rank"]) == counted[0]
    assert two["choice"]["k"] == one["choice"]["k"] and two["choice"]["neurons"] == one["choice"]["neurons"]
    assert two["random_beaten"] == one["random_beaten"]
    for key in ("shortlist", "random", "sweep"):
        a, b = one[key], two[key]
        assert list(a.columns) == list(b.columns) and len(a) == len(b)
        numeric = a.select_dtypes("number").columns
        pd.testing.assert_frame_equal(a.drop(columns=numeric), b.drop(columns=numeric))
        np.testing.assert_allclose(b[numeric].to_numpy(float), a[numeric].to_numpy(float), rtol=1e-4, atol=1e-6)
    table = one["sweep"]
    assert {"mean", "zero", "patch"} <= set(table["intervention"]) and (table["kind"] == "random").sum() >= 5
