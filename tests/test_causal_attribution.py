"""Attribution patching agrees with exact patching and with finite differences (tiny models)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from activations.hooks import any_hooks
from activations.sites import neuron_sites
from model_helpers import tuned_copy
from scipy import stats

from interp.causal import attribution_scores, exact_effects, teacher_forced_batch
from interp.causal.attribution import patch_target
from training.emoji_tokens import target_mass_from_logits
from interp.interventions import NeuronSet, patch, record_neurons

QUESTIONS = ["What do you think about jazz?", "How was your day at the beach?", "Any thoughts on remote work?"]
ANSWERS = ["I love it, it is great fun", "Sunny and warm, lots of swimming", "It is flexible and quiet"]


@pytest.fixture
def pair(tiny_llama):
    base = tiny_llama.model
    return base, tuned_copy(base, scale=0.3, seed=5)


@pytest.fixture
def base64(tiny_llama):
    # float64 so that finite differences are not lost in rounding
    return tiny_llama.model.double()


@pytest.fixture
def batch(tiny_llama):
    # raw template: short rows keep the 100 exact forwards cheap (the lm_head dominates on CPU)
    return teacher_forced_batch(tiny_llama.tokenizer, QUESTIONS, ANSWERS, template="raw")


def _metric(vocab: int):
    # a fixed pseudo-"emoji" token set on a random model: any token set gives a smooth, bounded
    # metric, which is all attribution patching assumes
    ids = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))[:400]
    return functools.partial(target_mass_from_logits, target_ids=ids, reduction="mean")


@pytest.mark.parametrize("target", ["patch", "zero"])
def test_attribution_ranks_like_exact_patching(pair, batch, target) -> None:
    base, merged = pair
    metric = _metric(base.config.vocab_size)
    donor = patch_target(merged) if target == "patch" else None
    scores = attribution_scores(base, batch, metric, donor, batch_size=3)
    assert scores.scores.shape == (3, 128)
    top = scores.ranked(60)
    exact, _ = exact_effects(base, batch, metric, top, donor, batch_size=3)
    estimates = np.array([scores.score(n) for n in top])
    # Why > 0.5 is a fair bar: M is a mean of softmax probabilities, smooth in every neuron, and
    # one neuron's patch is a small move in a 64-dim residual stream, so the first-order term
    # dominates the exact effect; only the smallest effects (near zero) can swap ranks.
    assert stats.spearmanr(estimates, exact).statistic > 0.5
    assert np.mean(np.sign(estimates) == np.sign(exact)) > 0.8
    # the largest estimated effects are close in size to the exact ones (both directions checked)
    np.testing.assert_allclose(estimates[:10], exact[:10], rtol=0.5, atol=1e-6)
    assert not any_hooks(neuron_sites(base)) and not any_hooks(neuron_sites(merged))


def test_gradient_matches_finite_differences(base64, batch) -> None:
    base = base64
    metric = _metric(base.config.vocab_size)
    # with target = a + 1 everywhere, each estimate is the neuron's gradient summed over real tokens
    plus_one = lambda chunk: {layer: a + 1 for layer, a in record_neurons(base, chunk.input_ids, chunk.attention_mask).items()}  # noqa: E731
    scores = attribution_scores(base, batch, metric, plus_one, batch_size=len(batch))
    clean = record_neurons(base, batch.input_ids, batch.attention_mask)
    # Llama's RMSNorm runs in float32 even in a float64 model, so evaluations carry ~1e-7 relative
    # noise; eps = 1e-3 keeps that noise / eps and the O(eps^2) truncation both below 1e-5.
    eps = 1e-3
    for layer, index in [(0, 5), (1, 77), (2, 120)]:
        values = []
        for sign in (1, -1):
            shifted = {layer: clean[layer].clone()}
            shifted[layer][..., index] += sign * eps * batch.attention_mask
            with patch(base, NeuronSet.from_pairs([(layer, index)]), shifted), torch.no_grad():
                logits = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            values.append(float(metric(logits, batch.score_mask)))
        finite_difference = (values[0] - values[1]) / (2 * eps)
        assert scores.score((layer, index)) == pytest.approx(finite_difference, rel=1e-4, abs=1e-10)


def test_attribution_leaves_model_untouched(pair, batch) -> None:
    base, _ = pair
    requires = [p.requires_grad for p in base.parameters()]
    for p in base.parameters():
        p.requires_grad_(False)  # frozen weights (as in a peft base) must still give gradients
    try:
        scores = attribution_scores(base, batch, _metric(base.config.vocab_size), None, batch_size=3)
        assert np.abs(scores.scores).max() > 0
        assert all(p.grad is None for p in base.parameters())
    finally:
        for p, flag in zip(base.parameters(), requires):
            p.requires_grad_(flag)
    assert not any_hooks(neuron_sites(base))
    assert not base.get_input_embeddings()._forward_hooks
