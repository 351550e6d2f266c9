"""The standard emoji study suite (held-out questions, emoji metrics, neutral prompts) and the
reference values mean / resample ablation need."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from activations.prompt_sets import apply_template
from interp.causal.evaluate import EvalSuite
from interp.causal.generation import GenerationConfig
from interp.causal.inputs import QuestionSet, reference_answer_batch, text_batch
from interp.causal.metrics import emoji_mass_metric, emoji_text_metrics, emoji_token_ids
from interp.interventions import mean_activations, mean_reference_from_cache, token_pool

EMOJI_MASS = "emoji_mass"
EMOJI_RATE = "emoji_rate"
EMOJI_SENTENCE_RATIO = "emoji_sentence_ratio"


def emoji_suite(
    tokenizer: PreTrainedTokenizerBase,
    questions: QuestionSet,
    neutral_texts: Sequence[str] | None,
    *,
    batch_size: int = 8,
    generation: GenerationConfig = GenerationConfig(),
) -> EvalSuite:
    """Emoji probability mass (teacher-forced on the reference answers, or on the first reply token
    when there are none), emoji rate and sentence ratio of replies generated to the chat-templated
    questions, and side effects on ``neutral_texts`` (raw text, no template)."""
    emoji_ids = emoji_token_ids(tokenizer)
    questions_batch = reference_answer_batch(tokenizer, questions)
    prompts = tuple(apply_template(tokenizer, q, "user") for q in questions.questions)
    neutral = text_batch(tokenizer, neutral_texts) if neutral_texts else None
    return EvalSuite(
        questions=questions_batch,
        logit_metrics={EMOJI_MASS: emoji_mass_metric(emoji_ids)},
        prompts=prompts if generation.max_new_tokens > 0 else (),
        prompt_ids=questions.ids if generation.max_new_tokens > 0 else (),
        text_metrics=emoji_text_metrics(),
        neutral=neutral,
        batch_size=batch_size,
        generation=generation,
    )


def ablation_reference(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    mode: str,
    texts: Sequence[str],
    *,
    cache: str | Path | None = None,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[int, Tensor] | None:
    """What ``ablate(mode=...)`` needs: nothing (zero), per-neuron token means (mean; from an
    activation cache when given, else measured on ``texts``), or a donor token pool from ``texts``
    (resample). Means and pools come from the model being ablated, on prompts that are not the
    questions, so they stand for "typical" activity rather than the behaviour under test."""
    if mode == "zero":
        return None
    if mode == "mean" and cache is not None:
        return mean_reference_from_cache(cache)
    if not texts:
        raise ValueError(f"{mode} ablation needs reference prompts (e.g. --neutral) or, for mean, --mean-from CACHE")
    device = next(model.parameters()).device
    batches = [(b.input_ids, b.attention_mask) for b in text_batch(tokenizer, texts).to(device).split(batch_size)]
    if mode == "mean":
        return mean_activations(model, batches)
    if mode == "resample":
        return token_pool(model, batches, seed=seed)
    raise ValueError(f"unknown ablation mode {mode!r}")
