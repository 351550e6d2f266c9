"""Benchmark: the proxy engine (stacked copies, passes resumed at the lowest edited layer) vs plain
hooked full passes, set by set, and vs the same full passes with no edit (the cost of one plain
forward per set, which only resuming can beat); not a test: prints times, ratios and the largest
disagreement.

Both measure the same neuron sets under mean ablation on the same writing contexts (the merged
model's replies cut before an emoji; here the base model's replies with injected emojis stand in)
and neutral chats. Sets: ``--n-sets`` random single neurons (the screen's exact checks) and as many
random 30-neuron sets from the last ten layers (the sweep's sets), on the default model.
Run: .venv/bin/python bench/bench_proxy.py [--n-sets 16]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from activations import DEFAULT_MODEL, load_model
from activations.prompt_sets import load_prompt_set
from activations.behaviors import Behavior
from activations.writing import writing_prompts
from interp.causal import build_proxy_suite, chat_batch, measure_sets, writing_batch
from interp.causal.metrics import target_ids_tensor
from interp.interventions import NeuronSet, ablate, content_reference
from training.studies import study_data


def plain(model, suite, sets, means) -> list[np.ndarray]:
    """Set by set, full passes with the ordinary hook."""
    out = []
    with torch.no_grad():
        for neurons in sets:
            values = []
            with ablate(model, neurons, "mean", means):
                for chunk in suite.contexts:
                    logits = model(**chunk.model_inputs()).logits[:, -1].float()
                    values.append(torch.logsumexp(logits[:, suite.target_ids], -1) - torch.logsumexp(logits, -1))
                for chunk in suite.neutral:
                    model(**chunk.model_inputs())
            out.append(torch.cat(values).numpy())
    return out


def forward_only(model, suite, n_sets: int) -> None:
    """The same passes with no edit at all, once per set: what one full pass per set costs at least."""
    with torch.no_grad():
        for _ in range(n_sets):
            for chunk in (*suite.contexts, *suite.neutral):
                model(**chunk.model_inputs())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--n-sets", type=int, default=16)
    args = parser.parse_args()
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    rows = study_data("injection", "extraversion").train[:8]
    writing = writing_prompts([r.topic for r in rows], [r.question for r in rows], [r.answer for r in rows],
                              Behavior.emoji())
    neutral = load_prompt_set("neutral").texts
    suite = build_proxy_suite(model, writing_batch(tokenizer, writing), chat_batch(tokenizer, neutral[32:40]),
                              target_ids_tensor(Behavior.emoji().target_token_ids(tokenizer)), batch_size=8)
    means = content_reference(model, tokenizer, neutral[:32]).means
    rng = np.random.default_rng(0)
    n_layers, width = len(means), len(means[0])
    singles = [NeuronSet.from_pairs([(int(rng.integers(n_layers)), int(rng.integers(width)))]) for _ in range(args.n_sets)]
    sets30 = [NeuronSet.from_pairs({(int(rng.integers(n_layers - 10, n_layers)), int(i))
                                    for i in rng.choice(width, 30, replace=False)}) for _ in range(args.n_sets)]
    print(f"model {args.model}; {suite.n_contexts} writing contexts, 8 neutral chats; {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    for name, sets in (("single neurons", singles), ("30-neuron sets, last 10 layers", sets30)):
        start = time.perf_counter()
        engine = measure_sets(model, suite, sets, "mean", means)
        fast = time.perf_counter() - start
        start = time.perf_counter()
        reference = plain(model, suite, sets, means)
        slow = time.perf_counter() - start
        start = time.perf_counter()
        forward_only(model, suite, len(sets))
        bare = time.perf_counter() - start
        worst = max(float(np.abs(r.log_mass - p).max()) for r, p in zip(engine, reference))
        print(f"{name}: engine {fast:.1f} s vs plain hooked {slow:.1f} s ({slow / fast:.2f}x) vs unedited full "
              f"passes {bare:.1f} s ({bare / fast:.2f}x) for {len(sets)} sets; largest |difference| in "
              f"log P(emoji) {worst:.1e}")


if __name__ == "__main__":
    main()
