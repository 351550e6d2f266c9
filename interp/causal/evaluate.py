"""Measure a model under one condition (clean, hooked intervention, cross-model patch).

``measure`` computes, for one condition:
  - each teacher-forced ``LogitMetric`` on the question batch (e.g. emoji probability mass);
  - each ``TextMetric`` on replies generated under the condition (e.g. emoji rate);
  - side effects on neutral prompts: mean next-token KL(unintervened || intervened) over scored
    positions, and the perplexity of the neutral texts under the condition.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from interp.causal.generation import GenerationConfig, generate_cross_patched, generate_replies, generate_stacked
from interp.causal.inputs import TokenBatch, scored_forward
from interp.causal.metrics import LogitMetric, TextMetric, next_token_kl_sum, nll_sum
from interp.interventions import NeuronSet, patch, record_neurons

KL_NEUTRAL = "kl_neutral"
PPL_NEUTRAL = "ppl_neutral"


class Condition(Protocol):
    """What is done to the model while it is measured."""

    def forward(self, model: nn.Module, batch: TokenBatch) -> AbstractContextManager: ...

    def generate(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                 config: GenerationConfig) -> list[str]: ...


@dataclass(frozen=True)
class Clean:
    """No intervention."""

    def forward(self, model: nn.Module, batch: TokenBatch) -> AbstractContextManager:
        return nullcontext()

    def generate(self, model, tokenizer, prompts, config) -> list[str]:
        return generate_replies(model, tokenizer, prompts, config)


@dataclass(frozen=True)
class Hooked:
    """A hook intervention that does not depend on the input (ablate, scale, constant patch)."""

    make: Callable[[nn.Module], AbstractContextManager]
    """E.g. ``lambda m: ablate(m, neurons, "zero")``."""

    def forward(self, model: nn.Module, batch: TokenBatch) -> AbstractContextManager:
        return self.make(model)

    def generate(self, model, tokenizer, prompts, config) -> list[str]:
        with self.make(model):
            return generate_replies(model, tokenizer, prompts, config)


@dataclass(frozen=True)
class CrossPatch:
    """Chosen neurons take ``donor``'s values on the same tokens: recorded per forward batch, and
    per generation step (``generate_cross_patched``)."""

    donor: nn.Module
    neurons: NeuronSet

    def forward(self, model: nn.Module, batch: TokenBatch) -> AbstractContextManager:
        values = record_neurons(self.donor, batch.input_ids, batch.attention_mask, layers=self.neurons.layers)
        return patch(model, self.neurons, values)

    def generate(self, model, tokenizer, prompts, config) -> list[str]:
        return generate_cross_patched(model, self.donor, self.neurons, tokenizer, prompts, config)


@dataclass(frozen=True)
class Stacked:
    """``copies`` input-independent hook interventions measured together: every batch is stacked
    ``copies`` times and ``make`` edits copy g its own way (``interp.interventions.ablate_stacked``).
    One pass per batch instead of ``copies``; see ``measure_stacked``."""

    make: Callable[[nn.Module], AbstractContextManager]
    """E.g. ``lambda m: ablate_stacked(m, [flagged, *randoms], "zero")``."""
    copies: int

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ValueError(f"copies must be >= 1, got {self.copies}")


@dataclass(frozen=True)
class EvalSuite:
    """Everything measured under each condition."""

    questions: TokenBatch | None
    """Teacher-forced question batch for the logit metrics (None: skip them)."""
    logit_metrics: Mapping[str, LogitMetric]
    """Name -> differentiable metric that is a mean over scored positions."""
    prompts: tuple[str, ...]
    """Templated generation prompts (empty: no generation)."""
    prompt_ids: tuple[str, ...]
    """One id per generation prompt, for the generated-text records."""
    text_metrics: Mapping[str, TextMetric]
    """Name -> metric on the generated replies."""
    neutral: TokenBatch | None
    """Neutral texts for side effects (None: skip them)."""
    batch_size: int = 8
    """Rows per forward pass."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """How replies are generated."""

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.prompt_ids):
            raise ValueError("one prompt id per generation prompt")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.questions is None and self.logit_metrics:
            raise ValueError("logit metrics need a question batch")

    @property
    def generates(self) -> bool:
        return bool(self.prompts) and bool(self.text_metrics) and self.generation.max_new_tokens > 0

    def describe(self) -> dict:
        """Provenance: sizes and settings, not the tensors."""
        return {
            "n_questions": len(self.questions) if self.questions is not None else 0,
            "n_scored_positions": self.questions.n_scored if self.questions is not None else 0,
            "logit_metrics": sorted(self.logit_metrics),
            "n_generation_prompts": len(self.prompts) if self.generates else 0,
            "text_metrics": sorted(self.text_metrics),
            "n_neutral": len(self.neutral) if self.neutral is not None else 0,
            "batch_size": self.batch_size,
            "generation": dataclasses.asdict(self.generation),
        }


@dataclass(frozen=True)
class Measurement:
    """Metric values for one condition and the replies it generated."""

    metrics: dict[str, float]
    texts: tuple[str, ...] = ()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def teacher_forced(
    model: nn.Module, batch: TokenBatch, metrics: Mapping[str, LogitMetric], condition: Condition, batch_size: int
) -> dict[str, float]:
    """Each metric over the whole batch: minibatch means weighted by their scored-position counts."""
    totals = dict.fromkeys(metrics, 0.0)
    for chunk in batch.to(_device(model)).split(batch_size):
        with condition.forward(model, chunk):
            logits, mask = scored_forward(model, chunk)
        for name, metric in metrics.items():
            totals[name] += float(metric(logits, mask)) * chunk.n_scored
    return {name: total / max(batch.n_scored, 1) for name, total in totals.items()}


@torch.no_grad()
def side_effects(model: nn.Module, batch: TokenBatch, condition: Condition, batch_size: int, clean: bool) -> dict[str, float]:
    """Mean next-token KL vs the unintervened model and perplexity on neutral texts."""
    kl = nll = 0.0
    for chunk in batch.to(_device(model)).split(batch_size):
        with condition.forward(model, chunk):
            logits = model(input_ids=chunk.input_ids, attention_mask=chunk.attention_mask).logits
        nll += float(nll_sum(logits, chunk.input_ids, chunk.score_mask))
        if not clean:  # the clean model's KL to itself is 0; skip the second forward pass
            reference = model(input_ids=chunk.input_ids, attention_mask=chunk.attention_mask).logits
            kl += float(next_token_kl_sum(reference, logits, chunk.score_mask))
    n = max(batch.n_scored, 1)
    return {KL_NEUTRAL: kl / n, PPL_NEUTRAL: math.exp(nll / n)}


def measure(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, suite: EvalSuite, condition: Condition
) -> Measurement:
    """All of ``suite``'s metrics for ``model`` under ``condition``."""
    metrics: dict[str, float] = {}
    if suite.questions is not None and suite.logit_metrics:
        metrics.update(teacher_forced(model, suite.questions, suite.logit_metrics, condition, suite.batch_size))
    texts: list[str] = []
    if suite.generates:
        texts = condition.generate(model, tokenizer, list(suite.prompts), suite.generation)
        metrics.update({name: float(metric(texts)) for name, metric in suite.text_metrics.items()})
    if suite.neutral is not None:
        metrics.update(side_effects(model, suite.neutral, condition, suite.batch_size, isinstance(condition, Clean)))
    return Measurement(metrics, tuple(texts))


def _stack(chunk: TokenBatch, copies: int) -> TokenBatch:
    return TokenBatch(chunk.input_ids.repeat(copies, 1), chunk.attention_mask.repeat(copies, 1),
                      chunk.score_mask.repeat(copies, 1), chunk.ids * copies)


@torch.no_grad()
def measure_stacked(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, suite: EvalSuite, stacked: Stacked
) -> list[Measurement]:
    """What ``measure`` gives for each of ``stacked``'s interventions, in one stacked pass per batch.

    Forward passes keep about ``suite.batch_size`` rows (``batch_size // copies`` prompts, stacked),
    since they are compute-bound; generation stacks ``generation.batch_size`` prompts ``copies``
    times, since one-token steps on a small batch are bound by reading the weights. The clean
    reference logits of the KL are computed once per neutral batch, not once per copy.
    """
    copies, device = stacked.copies, _device(model)
    rows = max(1, suite.batch_size // copies)
    metrics: list[dict[str, float]] = [{} for _ in range(copies)]
    if suite.questions is not None and suite.logit_metrics:
        totals = [dict.fromkeys(suite.logit_metrics, 0.0) for _ in range(copies)]
        for chunk in suite.questions.to(device).split(rows):
            with stacked.make(model):
                logits, mask = scored_forward(model, _stack(chunk, copies))
            for copy, copy_logits in enumerate(logits.unflatten(0, (copies, len(chunk)))):
                for name, metric in suite.logit_metrics.items():
                    totals[copy][name] += float(metric(copy_logits, mask[: len(chunk)])) * chunk.n_scored
        n = max(suite.questions.n_scored, 1)
        for copy, total in enumerate(totals):
            metrics[copy].update({name: value / n for name, value in total.items()})
    texts: list[list[str]] = [[] for _ in range(copies)]
    if suite.generates:
        with stacked.make(model):
            texts = generate_stacked(model, tokenizer, list(suite.prompts), suite.generation, copies)
        for copy, replies in enumerate(texts):
            metrics[copy].update({name: float(metric(replies)) for name, metric in suite.text_metrics.items()})
    if suite.neutral is not None:
        kl, nll = [0.0] * copies, [0.0] * copies
        for chunk in suite.neutral.to(device).split(rows):
            reference = model(input_ids=chunk.input_ids, attention_mask=chunk.attention_mask).logits
            big = _stack(chunk, copies)
            with stacked.make(model):
                logits = model(input_ids=big.input_ids, attention_mask=big.attention_mask).logits
            for copy, copy_logits in enumerate(logits.unflatten(0, (copies, len(chunk)))):
                nll[copy] += float(nll_sum(copy_logits, chunk.input_ids, chunk.score_mask))
                kl[copy] += float(next_token_kl_sum(reference, copy_logits, chunk.score_mask))
        n = max(suite.neutral.n_scored, 1)
        for copy in range(copies):
            metrics[copy].update({KL_NEUTRAL: kl[copy] / n, PPL_NEUTRAL: math.exp(nll[copy] / n)})
    return [Measurement(metrics[copy], tuple(texts[copy])) for copy in range(copies)]
