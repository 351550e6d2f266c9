"""Does the voice measure read the trait in model replies, not only in written texts?

The five personality fine-tunes of ``interp sweep`` (each trained on one trait's emoji-free Opinion-QA
answers) answered their trait's held-out questions; their replies are in
``reports/sweep/personality/<trait>/behavior.generations.jsonl``, the base model's answers to the same
questions in ``reports/sweep/base/<trait>/``. The measure never saw either. Printed:

- accuracy over five traits on the fine-tunes' replies, each labelled with its fine-tune's trait
  (chance 20%), for the voice measure and the words-only one;
- per trait, the mean score for that trait of the fine-tune's replies minus the base's on the same
  questions (paired by question, bootstrap interval): does the measure see the fine-tune move it?
- exclamation marks per reply of each fine-tune and of the base.

Run: .venv/bin/python examples/voice_on_sweep_replies.py [reports/sweep]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from activations.atomic_io import read_jsonl
from interp.causal.uncertainty import paired_mean_difference
from training.data import TRAITS
from training.trait_classifier import ClassifierConfig, VoiceText, accuracy, train_classifier


def per_question(records: list[dict], values: np.ndarray) -> dict[str, float]:
    by_key: dict[str, list[float]] = {}
    for record, value in zip(records, values):
        by_key.setdefault(record["prompt_id"], []).append(float(value))
    return {key: float(np.mean(v)) for key, v in by_key.items()}


def main(root: Path) -> None:
    replies = {(kind, trait): [r for r in read_jsonl(root / kind / trait / "behavior.generations.jsonl")
                               if r["prompt_set"].startswith("heldout-")]
               for kind in ("personality", "base") for trait in TRAITS}
    measures = {"voice": train_classifier(), "words only": train_classifier(config=ClassifierConfig(punctuation=False))}
    for name, model in measures.items():
        texts = [VoiceText(trait, r["prompt_id"], r["text"]) for trait in TRAITS for r in replies["personality", trait]]
        a = accuracy(model, texts)
        print(f"{name}: accuracy on the fine-tunes' replies {a.value:.1%} [{a.low:.1%}, {a.high:.1%}] (n={a.n}); "
              f"on the voice corpus's held-out topics {model.heldout.value:.1%}; on the Opinion-QA answers "
              f"{model.transfer.value:.1%}")
        for trait in TRAITS:
            scores = {kind: per_question(replies[kind, trait],
                                         model.trait_scores([r["text"] for r in replies[kind, trait]], trait))
                      for kind in ("personality", "base")}
            keys = sorted(scores["personality"])
            d = paired_mean_difference(np.array([scores["personality"][k] for k in keys]),
                                       np.array([scores["base"][k] for k in keys]))
            print(f"  {trait:17s} fine-tune minus base {d.value:+.2f} [{d.low:+.2f}, {d.high:+.2f}]")
    for trait in TRAITS:
        marks = {kind: np.mean([r["text"].count("!") for r in replies[kind, trait]]) for kind in ("personality", "base")}
        print(f"! per reply, {trait:17s} fine-tune {marks['personality']:.2f}, base {marks['base']:.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("reports/sweep"))
