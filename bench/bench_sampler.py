"""Benchmark: the sampler (``activations.sampling.sample_replies``) against ``model.generate`` and
against the forward passes that decoding needs (not a test; prints tokens/s and the ratios).

Same prompts (the default study's held-out Opinion-QA questions, then its training questions, in
the chat template), same
settings (temperature 0.7, top-p 0.95, ``--new-tokens`` at most, one batch of ``--batch``), on the
default model by default. Three references:

- ``generate``: transformers' sampler (its own random stream, so its replies differ; the tokens
  counted are each reply's up to its end-of-turn token, as for ours);
- ``forward, every row every step``: prefill, then one cached forward per step over the whole batch
  until the longest of *our* replies ends, feeding our tokens (what any sampler that keeps finished
  rows must compute: the limit for ``generate``);
- ``one teacher-forced pass``: prompt + our reply in one forward (a floor no step-by-step decoder
  reaches: it has no sequential dependency).
Run: .venv/bin/python bench/bench_sampler.py [--model SPEC] [--prompts 64] [--new-tokens 96]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from activations import DEFAULT_MODEL, load_model
from activations.prompt_sets import apply_template
from activations.sampling import SamplingConfig, growing_cache, sample_replies
from training.studies import study_data


def reply_length(line: list[int], eos: int) -> int:
    return line.index(eos) + 1 if eos in line else len(line)


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):], mask[i, width - len(row):] = torch.tensor(row), 1
    return ids, mask


@torch.no_grad()
def every_row_every_step(model, prompts: list[list[int]], replies: list[tuple[int, ...]], pad: int) -> None:
    ids, mask = left_pad(prompts, pad)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = growing_cache()
    model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
          logits_to_keep=1)
    steps = max(map(len, replies))
    fed = torch.full((len(replies), steps), pad, dtype=torch.long)
    for i, reply in enumerate(replies):
        fed[i, : len(reply)] = torch.tensor(reply)
    position = positions[:, -1:]
    for step in range(steps - 1):
        mask = torch.cat([mask, torch.ones((len(replies), 1), dtype=torch.long)], 1)
        position = position + 1
        model(input_ids=fed[:, step : step + 1], attention_mask=mask, position_ids=position, past_key_values=cache,
              use_cache=True)


@torch.no_grad()
def teacher_forced(model, prompts: list[list[int]], replies: list[tuple[int, ...]], pad: int) -> None:
    ids, mask = left_pad([list(p) + list(r) for p, r in zip(prompts, replies)], pad)
    model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=96)
    args = parser.parse_args()
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    data = study_data("personality", "extraversion")
    rows = list(data.test + data.train)[: args.prompts]
    prompts = [tokenizer(apply_template(tokenizer, r.question, "user"), add_special_tokens=False).input_ids
               for r in rows]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = SamplingConfig(max_new_tokens=args.new_tokens, batch_size=len(prompts))
    print(f"model {args.model}; {len(prompts)} prompts, <= {args.new_tokens} new tokens, one batch; "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")

    start = time.perf_counter()
    ours = sample_replies(model, tokenizer, prompts, [r.topic for r in rows], config)[0]
    seconds = {"sampler": time.perf_counter() - start}
    replies = [r.tokens for r in ours]
    tokens = {"sampler": sum(map(len, replies))}

    ids, mask = left_pad(prompts, pad)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=config.temperature,
                             top_p=config.top_p, top_k=0, max_new_tokens=args.new_tokens, pad_token_id=pad)
    seconds["generate"] = time.perf_counter() - start
    tokens["generate"] = sum(reply_length(line, eos) for line in out[:, ids.shape[1]:].tolist())

    start = time.perf_counter()
    every_row_every_step(model, prompts, replies, pad)
    seconds["forward, every row every step"] = time.perf_counter() - start
    start = time.perf_counter()
    teacher_forced(model, prompts, replies, pad)
    seconds["one teacher-forced pass"] = time.perf_counter() - start
    tokens["forward, every row every step"] = tokens["one teacher-forced pass"] = tokens["sampler"]

    rate = {name: tokens[name] / seconds[name] for name in seconds}
    for name in seconds:
        print(f"{name:32s} {seconds[name]:7.1f} s  {tokens[name]:6d} reply tokens  {rate[name]:7.1f} tokens/s  "
              f"sampler's rate / this: {rate['sampler'] / rate[name]:.2f}x")


if __name__ == "__main__":
    main()
