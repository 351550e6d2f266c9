"""Benchmark: float32 against bfloat16 autocast (``activations.precision``) for sampling and for LoRA
training, side by side in one run (not a test; prints times, rates, losses and ratios).

What the study's ``precision="auto"`` trades: on a CPU with native bf16 decoding and training run
faster, and results differ from float32's by rounding (a near-tie between two tokens can resolve the
other way), so a behaviour rate is a second draw of the same quantity. Sampling (same model, prompts
and random streams): seconds and their ratio, the share of replies identical in both, each
precision's behaviour rate, and the paired difference with a bootstrap interval over questions (it
should cover 0). Training: seconds per step and the losses of the first steps of the default study's
fine-tune in each precision. Every float32 pass runs twice (before and after bf16), so a drift of the
machine shows up as a difference between the two float32 times.

Run: .venv/bin/python bench/bench_precision.py [--tuned reports/merged] [--behavior emoji] [--samples 2]
     [--train-steps 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from activations import load_model
from activations.behaviors import Behavior
from activations.precision import resolve_precision
from interp.causal.experiment import sample_group
from interp.causal.uncertainty import mean_difference
from training.behavior import fresh_prompts
from training.config import BehaviorConfig, TrainConfig
from training.examples import encode_examples
from training.qlora import _training_step, batch_indices, load_trainable_model
from training.studies import study_data


def time_training(steps: int) -> None:
    """Seconds per step and losses of the default study's first ``steps`` LoRA steps in each precision."""
    data = study_data("injection", "extraversion")
    per_step = {}
    for run, precision in enumerate(("float32", "bfloat16", "float32")):
        config = TrainConfig(study="injection", trait="extraversion", quantize=False, precision=precision)
        model, tokenizer, _ = load_trainable_model(config, torch.device("cpu"))
        examples = encode_examples(tokenizer, [(r.question, r.answer) for r in data.train], config.max_length)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
        model.train()
        start, losses = time.perf_counter(), []
        for step in range(steps):
            batch = [examples[i] for i in batch_indices(step, len(examples), config.batch_size, config.seed)]
            losses.append(_training_step(model, batch, tokenizer.pad_token_id, torch.device("cpu"), optimizer, config))
        per_step[run] = (time.perf_counter() - start) / steps
        print(f"train {precision:9s} {per_step[run]:5.2f} s/step  losses {', '.join(f'{x:.3f}' for x in losses)}")
    print(f"training speed: float32 / bfloat16 = {(per_step[0] + per_step[2]) / 2 / per_step[1]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuned", default="reports/merged", help="model that shows the behaviour (a study's merged/)")
    parser.add_argument("--behavior", default="emoji")
    parser.add_argument("--samples", type=int, default=2, help="replies per fresh question")
    parser.add_argument("--new-tokens", type=int, default=56)
    parser.add_argument("--train-steps", type=int, default=3, help="LoRA steps timed per precision (0: none)")
    args = parser.parse_args()
    if args.train_steps:
        time_training(args.train_steps)
    loaded = load_model(args.tuned)
    behavior = Behavior.parse(args.behavior)
    group = fresh_prompts()
    device = next(loaded.model.parameters()).device
    print(f"{args.tuned}: {len(group.texts)} fresh questions x {args.samples}; {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} threads; auto resolves to {resolve_precision('auto', device)} here")
    seconds, replies = {}, {}
    for run, precision in enumerate(("float32", "bfloat16", "float32")):
        config = BehaviorConfig(behavior=args.behavior, samples=args.samples, max_new_tokens=args.new_tokens,
                                reference_mass=False, precision=precision)
        start = time.perf_counter()
        replies[run] = sample_group(loaded.model, loaded.tokenizer, group, config, args.samples, precision)
        seconds[run] = time.perf_counter() - start
        print(f"{precision:9s} {seconds[run]:6.1f} s  rate {behavior.rate([r.text for r in replies[run]]):.1%}")
    fp32, bf16 = replies[0], replies[1]
    if [r.text for r in fp32] != [r.text for r in replies[2]]:
        print("WARNING: the two float32 passes differ: sampling is not deterministic here")
    per_question = {}
    for name, rows in (("fp32", fp32), ("bf16", bf16)):
        by_key: dict[str, list[float]] = {}
        for reply in rows:
            by_key.setdefault(reply.key, []).append(float(behavior.shows(reply.text)))
        per_question[name] = np.array([np.mean(v) for v in by_key.values()])
    diff = mean_difference(per_question["fp32"], per_question["bf16"])
    same = sum(a.text == b.text for a, b in zip(fp32, bf16))
    print(f"bf16 - fp32 rate: {diff.value:+.1%} [{diff.low:+.1%}, {diff.high:+.1%}] (paired bootstrap over "
          f"questions); identical replies {same}/{len(fp32)}")
    print(f"speed: float32 / bfloat16 time = {(seconds[0] + seconds[2]) / 2 / seconds[1]:.2f}x "
          f"(float32 passes {seconds[0]:.1f} s and {seconds[2]:.1f} s)")


if __name__ == "__main__":
    main()
