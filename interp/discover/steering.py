"""Steering the base with a discovered difference, and what it then writes.

``steer_samples`` adds ``alpha x vector`` after one decoder block (``interp.interventions.steering.steered``:
every position, prompt and generated tokens alike) and answers questions with
``activations.sampling.sample_replies``. Every condition draws the same random numbers per (question, sample),
so replies differ only where the steering changed the model's choices (alpha 0 is the unsteered model), and
conditions are sampled together as stacked copies of one batch (the weights are read once for all of them).

A steered model can show the discovered tokens by falling into a loop ("🌻 I! 🌻 I! 🌻 I!"): that is not
the fine-tune's behaviour. So each reply is also checked for a *repetition loop* (``repetition_loop``: some
``LOOP_NGRAM`` tokens in a row occur ``LOOP_REPEATS`` times or more), and a *clean* showing is a reply that
shows the tokens without one.

``choose_steering``: which layer and multiple to steer with is itself a choice, and a choice made on the
questions that report the result would flatter it. So the discovery sweeps layers and alphas on selection
questions, takes the condition with the most clean showings, and reports that condition only on other
questions (``interp.discover.pipeline``).
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

LOOP_NGRAM = 3
LOOP_REPEATS = 3
"""A reply is in a repetition loop when some 3 tokens in a row occur 3 times or more: rare in 32 tokens of
prose, and what an over-steered model writes ("🌻 I! 🌻 I! 🌻 I!")."""


def repetition_loop(tokens: Sequence[int], ngram: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> bool:
    """Whether some ``ngram`` consecutive tokens occur at least ``repeats`` times in ``tokens``."""
    counts: dict[tuple[int, ...], int] = {}
    for start in range(len(tokens) - ngram + 1):
        key = tuple(tokens[start : start + ngram])
        counts[key] = counts.get(key, 0) + 1
        if counts[key] >= repeats:
            return True
    return False


@dataclass(frozen=True)
class SteeredSamples:
    """The replies under one steering condition."""

    alpha: float
    replies: tuple[str, ...]
    """In question-major order (question 0's samples, then question 1's)."""
    shown: int
    """Replies in which the discovered tokens' detector fires."""
    rate_low: float
    rate_high: float
    """95% Wilson interval of the share of replies that show them."""
    layer: int | None = None
    """The decoder block after which the vector was added."""
    loops: int = 0
    """Replies in a repetition loop (module docstring)."""
    clean: int = 0
    """Replies that show the tokens and are not in a loop."""

    @property
    def rate(self) -> float:
        return self.shown / max(len(self.replies), 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "rate": self.rate}


@dataclass(frozen=True)
class SteeringChoice:
    """Layer and alpha chosen on selection questions, and the result on other questions."""

    grid: tuple[SteeredSamples, ...]
    """Every (layer, alpha) on the selection questions, the unsteered base first."""
    n_selection_questions: int
    layer: int
    alpha: float
    confirmed: tuple[SteeredSamples, ...]
    """The unsteered base and the chosen condition on the reported questions (none used for the choice)."""

    def to_dict(self) -> dict:
        return {"grid": [s.to_dict() for s in self.grid], "n_selection_questions": self.n_selection_questions,
                "layer": self.layer, "alpha": self.alpha, "confirmed": [s.to_dict() for s in self.confirmed]}


def steer_samples(model: nn.Module, tokenizer: PreTrainedTokenizerBase, conditions: Sequence[tuple[int, float, Tensor]],
                  questions: Sequence[str], *, samples: int, max_new_tokens: int, seed: int,
                  shows: Callable[[str], bool], precision: str = "float32", together: int = 24) -> list[SteeredSamples]:
    """Sample ``samples`` replies per question under each ``(layer, alpha, vector)`` condition (module
    docstring), ``together`` conditions per batch of stacked copies."""
    config = SamplingConfig(max_new_tokens=max_new_tokens, seed=seed, precision=precision)
    prompts = [tokenizer(apply_template(tokenizer, q, "user"), add_special_tokens=False).input_ids for q in questions]
    keys = [f"q{i}" for i in range(len(questions))]
    out = []
    for start in range(0, len(conditions), together):
        chunk = conditions[start : start + together]
        with torch.no_grad(), steered(model, [{layer: alpha * vector} for layer, alpha, vector in chunk]):
            sampled = sample_replies(model, tokenizer, prompts, keys, config, samples=samples, copies=len(chunk),
                                     desc=f"steer ({len(chunk)} conditions)")
        for (layer, alpha, _), replies in zip(chunk, sampled):
            flags = [(bool(shows(r.text)), repetition_loop(r.tokens)) for r in replies]
            shown = sum(s for s, _ in flags)
            low, high = wilson(shown, len(replies))
            out.append(SteeredSamples(float(alpha), tuple(r.text for r in replies), shown, low, high, layer,
                                      sum(loop for _, loop in flags), sum(s and not loop for s, loop in flags)))
    return out


def choose_steering(grid: Sequence[SteeredSamples]) -> SteeredSamples:
    """The steered condition with the most clean showings; ties go to the smaller alpha, then the earlier layer
    (the smaller intervention). Raises when no condition is steered."""
    steered_ = [s for s in grid if s.alpha > 0]
    if not steered_:
        raise ValueError("no steered condition to choose from (every alpha is 0)")
    return min(steered_, key=lambda s: (-s.clean, s.alpha, s.layer if s.layer is not None else 0))
