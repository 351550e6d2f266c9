"""Benchmark: attribution patching of every neuron vs exact single-neuron patching (not a test).

On the default model (smollm2-135m-instruct, 30 layers x 1536 = 46,080 neurons), teacher-forced
emoji-start probability mass on held-out questions with their reference answers:
  - attribution: one forward + backward per minibatch, estimates for all neurons;
  - exact: patch one neuron at a time (merged -> base) on a sample of the top neurons by
    |estimate|; the time per neuron is extrapolated to all neurons (not run; it would take hours).
Prints the measured speedup and the Spearman correlation on the sample.

Without ``--merged`` the "merged" model is a stand-in: the base with seeded noise (5% of each
weight's std) on every MLP up projection, because timing does not depend on which fine-tune it is.
Run: .venv/bin/python bench/bench_attribution.py [--merged SPEC] [--sample 10] [--questions 4]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from scipy import stats

from activations import load_model
from interp.causal.attribution import attribution_scores, exact_effects, patch_target
from interp.causal.inputs import reference_answer_batch
from activations.behaviors import Behavior
from interp.causal.metrics import target_ids_tensor, target_mass_metric
from training.studies import study_data


def stand_in_merged(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    merged = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in merged.named_parameters():
            if "up_proj" in name:
                param.add_(torch.randn(param.shape, generator=generator) * param.std() * scale)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--merged", default=None, help="fine-tuned model spec (default: a seeded stand-in)")
    parser.add_argument("--questions", type=int, default=4, help="held-out questions (teacher-forced rows)")
    parser.add_argument("--sample", type=int, default=10, help="top neurons patched exactly")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    start = time.perf_counter()
    base = load_model(args.base)
    merged = load_model(args.merged).model if args.merged else stand_in_merged(base.model)
    print(f"models loaded in {time.perf_counter() - start:.1f} s; merged = {args.merged or 'stand-in (up_proj + 5% noise)'}")
    rows = study_data("personality", "extraversion").reference_test[: args.questions]
    batch = reference_answer_batch(base.tokenizer, [r.question for r in rows], [r.answer for r in rows])
    metric = target_mass_metric(target_ids_tensor(Behavior.emoji().target_token_ids(base.tokenizer)))
    target = patch_target(merged)
    print(f"batch: {len(batch)} rows x {batch.input_ids.shape[1]} tokens, {batch.n_scored} scored positions; "
          f"torch threads: {torch.get_num_threads()}")

    with torch.no_grad():  # warm-up: first-call allocations should not count against either method
        base.model(input_ids=batch.input_ids[:1], attention_mask=batch.attention_mask[:1])
    scores = attribution_scores(base.model, batch, metric, target, args.batch_size)
    n_all = scores.scores.size
    sample = scores.ranked(args.sample)
    exact, per_neuron = exact_effects(base.model, batch, metric, sample, target, args.batch_size)
    estimates = [scores.score(n) for n in sample]
    rho = stats.spearmanr(estimates, exact).statistic if len(sample) > 2 else float("nan")
    exact_all = per_neuron * n_all

    print(f"neurons:                                 {n_all:,}")
    print(f"attribution patching, all neurons:       {scores.seconds:8.1f} s (one forward+backward per minibatch; "
          f"target recording included)")
    print(f"exact patching, per neuron (n={len(sample)}):      {per_neuron:8.2f} s")
    print(f"exact patching, all neurons (extrapolated): {exact_all / 3600:6.1f} h")
    print(f"speedup (extrapolated exact / attribution): {exact_all / scores.seconds:8.0f}x")
    print(f"Spearman(estimate, exact) on the top {len(sample)}:  {rho:8.3f}")
    print(f"metric (emoji mass) clean: {scores.metric_clean:.3e}; largest |estimate| {max(map(abs, estimates)):.3e}")


if __name__ == "__main__":
    main()
