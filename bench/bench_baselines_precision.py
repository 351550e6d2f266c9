"""Benchmark: the baselines stage (the chosen set against 200 matched random sets, screen draws, raw
attribution and the difference-of-means direction) in float32 against bfloat16 autocast, side by side
in one run (not a test; prints times, their ratio and how far the removals, the standing and the rank
move).

Every competitor is an exact mean-ablation pass over the held-out writing contexts, so the stage's time
is matmuls; its numbers are shares of a target mass the fine-tune made large. Both precisions score the
same sets on the same contexts, clean pass included; float32 runs first and again last, so a drift of
the machine shows up as a difference between its two times.

Run: .venv/bin/python bench/bench_baselines_precision.py STUDY_DIR   (a finished default study, e.g. reports)
"""

from __future__ import annotations

import dataclasses

from bench_where_precision import side_by_side, study_run

from interp.causal.experiment import run_baselines, shared_held_out


def main() -> None:
    out, chosen, study = study_run(__doc__.split("\n\n")[0])

    def run(precision: str):
        config = dataclasses.replace(study.baselines, seed=study.seed, precision=precision)
        return run_baselines(str(out / "merged"), study.model, out / "neurons.csv", out / "behavior" / "writing.jsonl",
                             out / "causal" / "screen.csv", chosen, study.target_behavior,
                             dataclasses.replace(study.setup, seed=study.seed), config)

    with shared_held_out():  # models and controls loaded once: the times are the stage's passes
        run("float32")  # warm-up: loads the shared inputs
        fp32, t32, bf16, t16, t32_again = side_by_side(run)
    diff = (fp32.table["removal"] - bf16.table["removal"]).abs()
    print(f"seconds: float32 {t32:.1f} (again {t32_again:.1f}), bfloat16 {t16:.1f}: "
          f"{min(t32, t32_again) / t16:.2f}x ({len(diff)} sets, {fp32.n_contexts} contexts)")
    print(f"removals: largest |difference| {diff.max():.4f}, median {diff.median():.4f}")
    for result, name in ((fp32, "float32"), (bf16, "bfloat16")):
        c, r = result.chosen, result.rank
        print(f"  {name:8s} chosen {c['removal']:.4f} [{c['low']:.4f}, {c['high']:.4f}], rank {r['value']:.0f} "
              f"[{r['low']:.0f}, {r['high']:.0f}] of {r['out_of']:.0f}; random beaten "
              f"{result.standing['random']['beaten']:.1%}, best random {result.standing['random']['best']:.4f}")


if __name__ == "__main__":
    main()
