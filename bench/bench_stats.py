"""Benchmark: vectorised ``diff_arrays`` vs a per-neuron scipy/statsmodels loop (not a test).

Synthetic data with the shape of SmolLM2-135M (30 layers x 1536 neurons = 46,080) and 200 prompt
pairs (+ 200 neutral prompts). The loop runs the same tests per neuron on a random sample and is
extrapolated to all neurons (said so in the output):

- statsmodels loop: ``sm.OLS(y, X).fit()`` with the interaction design used by ``diff`` (prompt
  intercepts, per-prompt model and emoji slopes, interaction: 800 x 601) plus scipy's
  ``ttest_rel`` (change, two selectivities), ``wilcoxon`` (change) and Welch ``ttest_ind``
  (neutral control). The OLS fit is slow, so it is timed on a smaller sample.
- cheapest loop: the same tests, but the interaction OLS replaced by the ``ttest_rel`` on the
  difference of differences it equals: what a careful per-neuron implementation would cost.

Run: ``.venv/bin/python bench/bench_stats.py [--pairs 200] [--sample 300] [--ols-sample 20]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.multitest import multipletests

from interp.stats import DiffConfig, DiffInputs, diff_arrays


def synthetic(n_pairs: int, n_layers: int, d_mlp: int, seed: int = 0) -> DiffInputs:
    rng = np.random.default_rng(seed)
    shape = (n_pairs, n_layers, d_mlp)

    def noise(size: tuple[int, ...] = shape) -> np.ndarray:
        return rng.standard_normal(size, dtype=np.float32)

    prompt = noise()
    base_emoji = prompt + 0.3 * noise()
    return DiffInputs(
        base_emoji=base_emoji, base_twin=prompt + 0.3 * noise(),
        merged_emoji=base_emoji + 0.3 * noise(), merged_twin=prompt + 0.3 * noise(),
        base_neutral=noise(), merged_neutral=noise(),
    )


def slopes_design(n_pairs: int) -> np.ndarray:
    """Rows: (base emoji, base twin, merged emoji, merged twin) x prompt; the design of ``diff``."""
    eye = np.eye(n_pairs)
    blocks = [np.hstack([eye, eye * merged, eye * emoji, np.full((n_pairs, 1), merged * emoji)])
              for merged, emoji in ((0, 1), (0, 0), (1, 1), (1, 0))]
    return np.vstack(blocks)


def scipy_tests(cells: list[np.ndarray], neutral: list[np.ndarray], j: int, interaction_by_ttest: bool) -> None:
    base_e, base_t, merged_e, merged_t = (c[:, j] for c in cells)
    stats.ttest_rel(merged_e, base_e)
    stats.wilcoxon(merged_e - base_e, method="asymptotic")
    stats.ttest_rel(base_e, base_t)
    stats.ttest_rel(merged_e, merged_t)
    stats.ttest_ind(merged_e - base_e, neutral[1][:, j] - neutral[0][:, j], equal_var=False)
    if interaction_by_ttest:
        stats.ttest_1samp((merged_e - base_e) - (merged_t - base_t), 0.0)


def per_neuron_seconds(inputs: DiffInputs, sample: np.ndarray, ols_sample: np.ndarray) -> dict[str, float]:
    flat = lambda a: a.reshape(a.shape[0], -1).astype(np.float64)  # noqa: E731
    cells = [flat(inputs.base_emoji), flat(inputs.base_twin), flat(inputs.merged_emoji), flat(inputs.merged_twin)]
    neutral = [flat(inputs.base_neutral), flat(inputs.merged_neutral)]
    design = slopes_design(cells[0].shape[0])
    start = time.perf_counter()
    for j in ols_sample:
        sm.OLS(np.concatenate([c[:, j] for c in cells]), design).fit().pvalues[-1]
    ols = (time.perf_counter() - start) / len(ols_sample)
    start = time.perf_counter()
    for j in sample:
        scipy_tests(cells, neutral, j, interaction_by_ttest=False)
    others = (time.perf_counter() - start) / len(sample)
    start = time.perf_counter()
    for j in sample:
        scipy_tests(cells, neutral, j, interaction_by_ttest=True)
    cheapest = (time.perf_counter() - start) / len(sample)
    return {"ols": ols, "others": others, "cheapest": cheapest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--d-mlp", type=int, default=1536)
    parser.add_argument("--sample", type=int, default=300, help="neurons timed in the scipy loop")
    parser.add_argument("--ols-sample", type=int, default=20, help="neurons timed in the statsmodels OLS loop")
    args = parser.parse_args()
    n_neurons = args.layers * args.d_mlp
    inputs = synthetic(args.pairs, args.layers, args.d_mlp)
    print(f"data: {args.pairs} prompt pairs + {args.pairs} neutral prompts, {args.layers} x {args.d_mlp} = "
          f"{n_neurons:,} neurons; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    diff_arrays(synthetic(20, 2, 64), DiffConfig())  # warm up imports and caches
    start = time.perf_counter()
    result = diff_arrays(inputs, DiffConfig())
    vectorised = time.perf_counter() - start
    print(f"vectorised diff_arrays (6 tests incl. Wilcoxon, effect sizes, FDR, classes): {vectorised:.1f} s "
          f"({len(result.table):,} rows)")

    rng = np.random.default_rng(1)
    sample = rng.choice(n_neurons, args.sample, replace=False)
    per = per_neuron_seconds(inputs, sample, sample[: args.ols_sample])
    start = time.perf_counter()
    for _ in range(6):
        multipletests(rng.uniform(size=n_neurons), method="fdr_bh")
    correction = time.perf_counter() - start
    loop = (per["ols"] + per["others"]) * n_neurons + correction
    cheapest = per["cheapest"] * n_neurons + correction
    print(f"per-neuron loop, timed on a sample and EXTRAPOLATED to {n_neurons:,} neurons:")
    print(f"  statsmodels OLS interaction fit: {per['ols'] * 1e3:.0f} ms/neuron (timed on {args.ols_sample} neurons)")
    print(f"  scipy change/Wilcoxon/selectivity/neutral tests: {per['others'] * 1e3:.2f} ms/neuron "
          f"(timed on {args.sample} neurons)")
    print(f"  statsmodels loop total: {loop:,.0f} s = {loop / 3600:.1f} h "
          f"-> vectorised is {loop / vectorised:,.0f}x faster")
    print(f"  cheapest loop (interaction as ttest on the contrast, same p): {per['cheapest'] * 1e3:.2f} ms/neuron, "
          f"{cheapest:,.0f} s -> vectorised is {cheapest / vectorised:,.0f}x faster")


if __name__ == "__main__":
    main()
