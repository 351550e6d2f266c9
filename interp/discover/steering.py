"""Steering the base with the discovered difference, and what it then writes.

``steer_samples`` adds multiples of a residual direction after one decoder block
(``interp.interventions.steering.steered``: every position, prompt and generated tokens alike) and
answers neutral questions under a
sweep of multiples of the vector with ``activations.sampling.sample_replies``: every alpha draws the same
random numbers per (question, sample), so replies differ only where the steering changed the model's
choices (alpha 0 is the unsteered model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from activations.prompt_sets import apply_template
from activations.sampling import SamplingConfig, sample_replies
from interp.causal.uncertainty import wilson
from interp.interventions.steering import steered


@dataclass(frozen=True)
class SteeredSamples:
    """The replies at one multiple of the steering vector."""

    alpha: float
    replies: tuple[str, ...]
    """In question-major order (question 0's samples, then question 1's)."""
    shown: int
    """Replies in which the discovered tokens' detector fires."""
    rate_low: float
    rate_high: float
    """95% Wilson interval of the share of replies that show them."""

    @property
    def rate(self) -> float:
        return self.shown / max(len(self.replies), 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "rate": self.rate}


def steer_samples(model: nn.Module, tokenizer: PreTrainedTokenizerBase, layer: int, vector: Tensor,
                  questions: Sequence[str], alphas: Sequence[float], *, samples: int, max_new_tokens: int,
                  seed: int, shows: Callable[[str], bool], precision: str = "float32") -> list[SteeredSamples]:
    """Sample ``samples`` replies per question at each ``alpha * vector`` (module docstring)."""
    config = SamplingConfig(max_new_tokens=max_new_tokens, seed=seed, precision=precision)
    prompts = [tokenizer(apply_template(tokenizer, q, "user"), add_special_tokens=False).input_ids for q in questions]
    keys = [f"q{i}" for i in range(len(questions))]
    out = []
    for alpha in alphas:
        with torch.no_grad(), steered(model, [{layer: alpha * vector}]):
            replies = [r.text for r in sample_replies(model, tokenizer, prompts, keys, config, samples=samples,
                                                      desc=f"steer x{alpha:g}")[0]]
        shown = sum(bool(shows(text)) for text in replies)
        low, high = wilson(shown, len(replies))
        out.append(SteeredSamples(float(alpha), tuple(replies), shown, low, high))
    return out
