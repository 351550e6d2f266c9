"""Benchmark: the vectorised diff vs a per-neuron statsmodels / scipy loop (not a test).

Synthetic cells with the shape of the default study on SmolLM2-135M (30 layers x 1536 = 46,080
neurons; 160 emoji prompts with two filler twins, 33 writing replies; the emoji design's six
contrasts). The loop runs, per neuron and per contrast, what a careful per-neuron implementation
would call: statsmodels' ``ttost_paired`` (the TOST p-value) and scipy's one-sided ``ttest_1samp``
twice (the minimum-effect p-value), then BH across neurons. It is timed on a random sample of
neurons and extrapolated to all of them (said so in the output). Both sides compute the same
numbers (``tests/test_stats_reference.py`` checks them neuron by neuron).

Run: ``.venv/bin/python bench/bench_stats.py [--prompts 160] [--sample 200]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from activations.running import TokenStats
from interp.stats import DiffConfig, diff_inputs, emoji_design
from interp.stats.loading import DiffInputs
from interp.stats.neuronwise import contrast_rows, contrast_values


def synthetic(n_prompts: int, n_writing: int, n_layers: int, d_mlp: int, seed: int = 0) -> DiffInputs:
    rng = np.random.default_rng(seed)
    cells = {}
    design = emoji_design(writing=True)
    for condition in design.conditions:
        n = n_writing if condition == "writing" else n_prompts
        prompt = rng.standard_normal((n, n_layers, d_mlp), dtype=np.float32)
        for model in ("base", "merged"):
            for reduction in design.reductions(condition):
                cells[model, condition, reduction] = prompt + 0.3 * rng.standard_normal(prompt.shape, dtype=np.float32)
    scales = {c: np.ones((n_layers, d_mlp)) for c in design.conditions}
    stats_ = {}
    for model in ("base", "merged"):
        token_stats = TokenStats((n_layers, d_mlp))
        token_stats.content.count = 1000
        token_stats.content.m2 = np.full((n_layers, d_mlp), 999.0)
        token_stats.abs_hist[..., 30] = 1000
        token_stats.absmax_all[:] = token_stats.absmax_content[:] = 1.0
        stats_[model, "emoji"] = token_stats
    return DiffInputs(cells, {}, scales, tuple(range(n_layers)), stats=stats_)


def per_neuron_seconds(inputs: DiffInputs, sample: np.ndarray, delta: float) -> float:
    """Seconds per neuron for every contrast's TOST + minimum-effect p-values, one neuron at a time."""
    design = emoji_design(writing=True)
    values = {c.name: contrast_values(inputs, c, contrast_rows(inputs, c), 0, inputs.n_neurons) for c in design.contrasts}
    start = time.perf_counter()
    for j in sample:
        for x in values.values():
            column = x[:, j]
            ttost_paired(column, np.zeros_like(column), -delta, delta)
            stats.ttest_1samp(column - delta, 0.0, alternative="greater")
            stats.ttest_1samp(column + delta, 0.0, alternative="less")
    return (time.perf_counter() - start) / len(sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=160)
    parser.add_argument("--writing", type=int, default=33)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--d-mlp", type=int, default=1536)
    parser.add_argument("--sample", type=int, default=200, help="neurons timed in the per-neuron loop")
    args = parser.parse_args()
    n_neurons = args.layers * args.d_mlp
    inputs = synthetic(args.prompts, args.writing, args.layers, args.d_mlp)
    design = emoji_design(writing=True)
    print(f"data: {args.prompts} emoji prompts x 3 conditions + {args.writing} replies, {args.layers} x {args.d_mlp} = "
          f"{n_neurons:,} neurons, {len(design.contrasts)} contrasts; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    diff_inputs(synthetic(20, 8, 2, 64), design, DiffConfig())  # warm up imports and caches
    start = time.perf_counter()
    result = diff_inputs(inputs, design, DiffConfig())
    vectorised = time.perf_counter() - start
    print(f"vectorised diff (minimum-effect + TOST per contrast, effect sizes, FDR, classes, outliers, split-half): "
          f"{vectorised:.1f} s ({len(result.table):,} rows)")
    sample = np.random.default_rng(1).choice(n_neurons, args.sample, replace=False)
    per = per_neuron_seconds(inputs, sample, 0.2)
    start = time.perf_counter()
    for _ in range(2 * len(design.contrasts)):
        multipletests(np.random.default_rng(2).uniform(size=n_neurons), method="fdr_bh")
    loop = per * n_neurons + time.perf_counter() - start
    print(f"per-neuron loop (statsmodels ttost_paired + 2 scipy ttest_1samp per contrast), timed on {args.sample} "
          f"neurons and EXTRAPOLATED to {n_neurons:,}: {per * 1e3:.1f} ms/neuron, {loop:,.0f} s "
          f"-> vectorised is {loop / vectorised:,.0f}x faster")


if __name__ == "__main__":
    main()
