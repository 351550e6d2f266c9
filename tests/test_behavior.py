"""Behaviour metrics: text statistics, bootstrap intervals, and measurement on tiny models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from activations import LoadedModel
from training.behavior import BehaviorConfig, measure_behavior, save_behavior
from activations.behaviors import Behavior
from training.reply_metrics import bootstrap_ratio, split_sentences, text_stats

EMOJI = Behavior.emoji()

SMALL = BehaviorConfig(samples=2, max_questions=2, neutral_prompts=2, max_new_tokens=6, batch_size=4, bootstrap=200)


def test_sentences_keep_trailing_emojis() -> None:
    assert split_sentences("Great party! 🎉 See you there. Bye 😄", EMOJI) == ["Great party! 🎉", "See you there.", "Bye 😄"]
    stats = text_stats("Great party! 🎉🎉 See you there.\nNo emoji here", EMOJI)
    assert (stats.n_occurrences, stats.n_sentences, stats.n_sentences_showing) == (2, 3, 1)
    assert text_stats("", EMOJI).n_sentences == 0
    assert text_stats("👨‍👩‍👧 family", EMOJI).n_occurrences == 1  # a ZWJ sequence is one emoji


def test_sentences_keep_trailing_stage_directions() -> None:
    directions = Behavior.stage_directions()
    text = "Great party! [grins] [claps] See you there. Bye [waves excitedly]"
    assert split_sentences(text, directions) == ["Great party! [grins] [claps]", "See you there.", "Bye [waves excitedly]"]
    stats = text_stats(text, directions)
    assert (stats.n_occurrences, stats.n_sentences, stats.n_sentences_showing) == (3, 3, 2)
    assert stats.occurrences == ("[grins]", "[claps]", "[waves excitedly]")


def test_bootstrap_interval_matches_the_delta_method() -> None:
    # For many clusters the cluster bootstrap of a ratio of sums approaches the delta-method
    # (linearised) interval: an independent formula for the same standard error.
    rng = np.random.default_rng(1)
    denominators = rng.integers(1, 6, size=400).astype(float)
    numerators = rng.binomial(denominators.astype(int), rng.uniform(0.1, 0.9, size=400)).astype(float)
    estimate = bootstrap_ratio(numerators, denominators, n_resamples=4000, seed=0)
    ratio = numerators.sum() / denominators.sum()
    assert estimate.value == pytest.approx(ratio)
    residual = numerators - ratio * denominators
    se = np.sqrt((residual**2).sum()) / denominators.sum()
    assert estimate.high - estimate.low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert (estimate.low + estimate.high) / 2 == pytest.approx(ratio, abs=0.25 * se)
    assert bootstrap_ratio(numerators, denominators, n_resamples=4000, seed=0) == estimate
    single = bootstrap_ratio(np.array([1.0]), np.array([2.0]))
    assert single.low == single.value == single.high == 0.5


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown trait"):
        BehaviorConfig(trait="happy")
    with pytest.raises(ValueError, match="nothing to ask"):
        BehaviorConfig(trait=None, neutral_prompts=0)
    with pytest.raises(ValueError, match="samples"):
        BehaviorConfig(samples=0)
    with pytest.raises(ValueError, match="max_questions must be at least 1"):
        BehaviorConfig(max_questions=-1)  # once silently "all but the last"
    with pytest.raises(ValueError, match="neutral_prompts must be >= 0"):
        BehaviorConfig(neutral_prompts=-1)


def test_measure_is_seeded_and_complete(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    first = measure_behavior(tiny_llama.model, tiny_llama.tokenizer, SMALL, model_label="tiny")
    again = measure_behavior(tiny_llama.model, tiny_llama.tokenizer, SMALL, model_label="tiny")
    assert [g.text for g in first.generations] == [g.text for g in again.generations]
    assert [g.name for g in first.groups] == ["heldout-extraversion", "neutral"]
    heldout = first.group("heldout-extraversion")
    assert heldout.n_prompts == 2 and heldout.n_responses == 4 and heldout.reference_mass is not None
    assert first.group("neutral").reference_mass is None
    assert 0 < heldout.mass.value < 0.05  # a random model spreads its mass over 49k tokens
    summary, texts = save_behavior(first, tmp_path / "b.json")
    assert json.loads(summary.read_text())["groups"][0]["rate"]["value"] == heldout.rate.value
    assert len(texts.read_text().splitlines()) == 8
    with pytest.raises(FileExistsError):
        save_behavior(first, tmp_path / "b.json")


@contextmanager
def forced_token(model: torch.nn.Module, token_id: int) -> Iterator[None]:
    """Make the model always predict ``token_id`` (a planted emoji habit), like an intervention would."""

    def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[..., token_id] += 100.0
        return output

    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def test_planted_emoji_habit_is_measured_inside_a_hook_context(tiny_llama: LoadedModel) -> None:
    tokenizer = tiny_llama.tokenizer
    smile = tokenizer.encode(" 🙂", add_special_tokens=False)
    assert len(smile) == 1  # one token in SmolLM2's vocabulary
    with forced_token(tiny_llama.model, smile[0]):
        planted = measure_behavior(tiny_llama.model, tokenizer, SMALL)
    for group in planted.groups:
        assert group.rate.value == 1.0 and group.sentence_ratio.value == 1.0
        assert group.per_response.value == SMALL.max_new_tokens
        assert group.mass.value > 0.99 and group.top[0][0] == "🙂"
    assert planted.group("heldout-extraversion").reference_mass.value > 0.99
    clean = measure_behavior(tiny_llama.model, tokenizer, SMALL)  # the hook is gone again
    assert clean.group("neutral").rate.value == 0.0


def test_emoji_mass_read_while_decoding_equals_a_teacher_forced_pass(tiny_llama: LoadedModel) -> None:
    from activations.sampling import SamplingConfig, sample_replies
    from training.behavior import _teacher_forced_mass, target_mass_stat
    from training.emoji_tokens import emoji_start_token_ids

    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    prompts = [tokenizer.encode(t, add_special_tokens=False) for t in ("Hello there, how", "What is the best")]
    replies = sample_replies(model, tokenizer, prompts, ["a", "b"], SamplingConfig(max_new_tokens=8, seed=3),
                             step_stat=target_mass_stat(emoji_start_token_ids(tokenizer)))[0]
    for prompt, reply in zip(prompts, replies):
        # the same reply scored the slow way: one forward pass over prompt + reply
        ids = torch.tensor([prompt + list(reply.tokens)])
        counted = torch.zeros_like(ids, dtype=torch.bool)
        counted[0, len(prompt) - 1 : len(prompt) - 1 + len(reply.tokens)] = True
        slow = _teacher_forced_mass(model, ids, torch.ones_like(ids), counted, emoji_start_token_ids(tokenizer))[0]
        assert float(np.mean(reply.step_stats)) == pytest.approx(slow, rel=1e-4) and slow > 0
