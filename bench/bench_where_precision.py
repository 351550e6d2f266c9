"""Benchmark: "where the change lives" in float32 against bfloat16 autocast, side by side in one run
(not a test; prints times, their ratio and how far the shares move).

The where stage patches about 130 neuron sets in both directions, every one an exact pass over the
held-out writing contexts: its time is matmuls. On a CPU with native bf16 (AMX) autocast halves it,
and its numbers are shares of a change the fine-tune made large (the merged model's target
probability against the base's), so the question is whether rounding moves any share, interval or
count of beaten random sets by enough to matter. Everything is computed in both precisions, clean
runs included, on the same contexts and sets; the float32 run goes first and again last, so a drift
of the machine shows up as a difference between its two times.

Run: .venv/bin/python bench/bench_where_precision.py STUDY_DIR   (a finished default study, e.g. reports)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from interp.causal.experiment import run_where
from interp.interventions import NeuronSet
from interp.study.config import StudyConfig


def study_run(description: str) -> tuple[Path, NeuronSet, StudyConfig]:
    """The finished study named on the command line, its chosen set and the default study's settings."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("study", type=Path)
    out = parser.parse_args().study
    return out, NeuronSet.from_pairs(json.loads((out / "causal" / "sweep.json").read_text())["choice"]["neurons"]), \
        StudyConfig()


def side_by_side(run: Callable[[str], Any]) -> tuple[Any, float, Any, float, float]:
    """float32, bfloat16, float32 again: (float32 result, its seconds, bf16 result, its seconds, float32's
    seconds again), so a drift of the machine shows as a difference between the two float32 times."""
    times, results = [], []
    for precision in ("float32", "bfloat16", "float32"):
        started = time.perf_counter()
        results.append(run(precision))
        times.append(time.perf_counter() - started)
    return results[0], times[0], results[1], times[1], times[2]


def main() -> None:
    out, chosen, study = study_run(__doc__.split("\n\n")[0])

    def run(precision: str):
        config = dataclasses.replace(study.where, seed=study.seed, precision=precision)
        return run_where(str(out / "merged"), study.model, out / "neurons.csv", out / "behavior" / "writing.jsonl",
                         out / "causal" / "screen.csv", chosen, study.target_behavior, dataclasses.replace(
                             study.setup, seed=study.seed), config)

    fp32, t32, bf16, t16, t32_again = side_by_side(run)
    a, b = fp32.table, bf16.table
    diff = (a[["share", "low", "high"]] - b[["share", "low", "high"]]).abs()
    print(f"seconds: float32 {t32:.1f} (again {t32_again:.1f}), bfloat16 {t16:.1f}: "
          f"{min(t32, t32_again) / t16:.2f}x")
    print(f"clean target probability: merged {fp32.clean['merged']:.4f} vs {bf16.clean['merged']:.4f}, "
          f"base {fp32.clean['base']:.5f} vs {bf16.clean['base']:.5f}")
    print(f"{len(a)} shares: largest |difference| {diff['share'].max():.4f}, median {diff['share'].median():.4f}; "
          f"interval ends {diff[['low', 'high']].to_numpy().max():.4f}")
    for family, rows in a.assign(d=diff["share"]).groupby("family"):
        print(f"  {family:22s} {len(rows):3d} sets, largest |share difference| {rows['d'].max():.4f}")
    for direction in ("noising", "denoising"):
        row32, row16 = fp32.share(direction, "chosen"), bf16.share(direction, "chosen")
        print(f"chosen set, {direction}: {row32['share']:.4f} [{row32['low']:.4f}, {row32['high']:.4f}] vs "
              f"{row16['share']:.4f} [{row16['low']:.4f}, {row16['high']:.4f}]; random sets beaten "
              f"{fp32.random_beaten(direction):.0%} vs {bf16.random_beaten(direction):.0%}")


if __name__ == "__main__":
    main()
