"""Benchmark: one dose-response point measured set by set vs stacked (not a test; prints times).

A dose-response point ablates the flagged set and ``n_random`` matched random sets and measures each
on the study's suite (teacher-forced emoji mass on held-out questions, greedy replies, neutral-prompt
side effects). ``stacked`` runs all sets in one batch of stacked copies (``ablate_stacked``). Both
runs measure the same sets in the same process, one after the other, and the script checks that
they agree. The model is the default base; timing does not depend on which model it is.
Run: .venv/bin/python bench/bench_stacked.py [--k 30] [--n-random 5] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from activations import DEFAULT_MODEL, load_model
from interp.causal import DoseResponseConfig, GenerationConfig, dose_response, emoji_suite, load_neutral, load_questions
from interp.interventions import layer_widths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--k", type=int, default=30, help="neurons per set")
    parser.add_argument("--n-random", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    _, neutral = load_neutral(limit=20)
    suite = emoji_suite(tokenizer, load_questions(), neutral,
                        generation=GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=16))
    widths = layer_widths(model)
    last = max(widths)
    ranked = [(last - i % 4, (37 * i) % widths[last]) for i in range(args.k)]  # any fixed set will do
    print(f"model {args.model}; {len(suite.prompts)} questions, {args.max_new_tokens} new tokens, "
          f"{args.n_random} random sets of k={args.k}; torch threads {torch.get_num_threads()}")
    with torch.no_grad():  # warm-up, so neither run pays first-call allocations
        model(input_ids=suite.questions.input_ids[:1])
    seconds, results = {}, {}
    for stacked in (False, True):
        config = DoseResponseConfig(k_grid=(args.k,), n_random=args.n_random, stacked=stacked)
        start = time.perf_counter()
        results[stacked] = dose_response(model, tokenizer, ranked, suite, config)
        seconds[stacked] = time.perf_counter() - start
    same_texts = [r["text"] for r in results[True].generations] == [r["text"] for r in results[False].generations]
    gap = max(abs(a - results[False].points[0].flagged[name])
              for name, a in results[True].points[0].flagged.items())
    print(f"set by set: {seconds[False]:7.1f} s   (baseline + {1 + args.n_random} sets)")
    print(f"stacked:    {seconds[True]:7.1f} s")
    print(f"speedup:    {seconds[False] / seconds[True]:7.2f}x   same replies: {same_texts}; "
          f"largest flagged-metric difference {gap:.2e}")


if __name__ == "__main__":
    main()
