"""Benchmark: how fast the ``interp`` command line answers help and bad input (not a test).

Every case runs in a fresh process, as a user's shell would start it, and is timed wall-clock, best
of ``REPEATS`` interleaved rounds (the machine is shared, so the minimum is the honest cost). The
reference row imports torch and transformers, which every command paid before the CLI imported them
lazily (``activations.lazy``).
Run: .venv/bin/python bench/bench_cli.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPEATS = 5
HELP_TARGET_S = 1.5
ERROR_TARGET_S = 2.0


def timed(argv: list[str], expect: int) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != expect:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}, expected {expect}: {done.stderr}")
    return seconds


def main() -> None:
    script = Path(sys.executable).with_name("interp")  # the installed entry point a user types
    interp = [str(script)] if script.exists() else [sys.executable, "-m", "interp.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        empty, no_text = Path(tmp) / "empty.txt", Path(tmp) / "no_text.csv"
        empty.write_text("")
        no_text.write_text("id,prompt\n1,hello\n")
        out = str(Path(tmp) / "acts.h5")
        cases = [
            ("interp --help", [*interp, "--help"], 0, HELP_TARGET_S),
            ("interp cache --help", [*interp, "cache", "--help"], 0, HELP_TARGET_S),
            ("empty prompt file", [*interp, "cache", "--prompts", str(empty), "--out", out], 2, ERROR_TARGET_S),
            ("negative batch size", [*interp, "cache", "--prompts", "emoji", "--batch-size", "-1", "--out", out], 2,
             ERROR_TARGET_S),
            ("CSV without a text column", [*interp, "cache", "--prompts", str(no_text), "--out", out], 2,
             ERROR_TARGET_S),
            ("reference: import torch, transformers", [sys.executable, "-c", "import torch, transformers"], 0, None),
        ]
        best = {name: float("inf") for name, *_ in cases}
        for _ in range(REPEATS):
            for name, argv, expect, _target in cases:
                best[name] = min(best[name], timed(argv, expect))
    print(f"{'case':<40} {'wall (best of ' + str(REPEATS) + ')':>20} {'target':>8}")
    for name, _argv, _expect, target in cases:
        verdict = "-" if target is None else f"< {target:g} s" + ("" if best[name] < target else " MISSED")
        print(f"{name:<40} {best[name]:>18.2f} s {verdict:>8}")
    reference = best["reference: import torch, transformers"]
    print(f"help is {reference / best['interp --help']:.0f}x faster than the imports it no longer pays")


if __name__ == "__main__":
    main()
