"""Benchmark data-parallel capture: 1 rank vs 2 ranks on this machine (not a test; run by hand).

    .venv/bin/python bench/bench_distributed.py [--model smollm2-135m-instruct] [--prompts 128] [--repeats 2]

Both runs go through ``torchrun`` and ``activations.shards.distributed_capture`` with the same prompts
(emoji set, user template, all layers, default reductions). One rank gets every core as torch
threads; with 2 ranks each gets its share (OMP_NUM_THREADS = cores / ranks), as torchrun would
arrange. The timed section starts after the model load, behind a barrier, and ends when rank 0
has merged the shards, so the merge is counted. Runs alternate (1, 2, 1, 2, ...) so drift in the
machine's speed hits both; the script prints each run and the ratio of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _worker(model: str, n: int, out: str, timing: str) -> None:
    from activations import distributed, load_model
    from activations.prompt_sets import load_prompt_set
    from activations.shards import distributed_capture

    world = distributed.init()
    loaded = load_model(model)
    prompts = load_prompt_set("emoji").head(n)
    distributed.barrier()
    start = time.perf_counter()
    distributed_capture(loaded, None, prompts, out).close()
    seconds = time.perf_counter() - start
    if world.is_main:
        Path(timing).write_text(json.dumps({"seconds": seconds, "ranks": world.size}))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(ranks: int, model: str, n: int, folder: Path) -> float:
    cores = os.cpu_count() or 1
    out, timing = folder / f"acts-{ranks}-{time.time_ns()}.h5", folder / "timing.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // ranks))}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr",
               "127.0.0.1", "--master-port", str(_port()), __file__, "--worker", model, str(n), str(out), str(timing)]
    subprocess.run(command, env=env, check=True, capture_output=True)
    out.unlink()
    return float(json.loads(timing.read_text())["seconds"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for ranks in (1, 2):
                seconds = _run(ranks, args.model, args.prompts, Path(folder))
                times[ranks].append(seconds)
                print(f"run {repeat + 1}, {ranks} rank(s): {seconds:.1f} s, {args.prompts / seconds:.2f} prompts/s",
                      flush=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"{args.model}, {args.prompts} prompts, {os.cpu_count()} cores: 1 rank {args.prompts / one:.2f} prompts/s, "
          f"2 ranks {args.prompts / two:.2f} prompts/s; 2 ranks / 1 rank throughput = {one / two:.2f}x")


if __name__ == "__main__":
    main()
