"""Passes resumed at a layer reproduce full passes, and exact patching through them is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activations.resume import block_outputs, resume_from, resumes_exactly
from activations.sites import decoder_blocks, neuron_sites
from interp.causal import exact_effects, teacher_forced_batch
from interp.causal.attribution import patch_target
from training.emoji_tokens import target_mass_from_logits

TEXTS = ["The weather today is lovely and", "My favourite food is pasta with tomato"]


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_resumed_pass_equals_full_pass_and_skips_early_blocks(which, request) -> None:
    loaded = request.getfixturevalue(which)
    model = loaded.model
    loaded.tokenizer.padding_side = "right"
    inputs = dict(loaded.tokenizer(TEXTS, return_tensors="pt", padding=True))
    calls: list[int] = []
    # the MLP inside each block tells whether the block computed anything
    handles = [site.module.register_forward_pre_hook(lambda m, a, i=site.layer: calls.append(i))
               for site in neuron_sites(model)]
    try:
        with torch.no_grad(), block_outputs(model, [1]) as outputs:
            full = model(**inputs).logits
        calls.clear()
        with torch.no_grad(), resume_from(model, 2, outputs[1]):
            resumed = model(**inputs).logits
        ran = sorted(set(calls))
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(full, resumed)
    assert ran == list(range(2, len(decoder_blocks(model))))  # the stubs bypass blocks 0 and 1 entirely
    assert all("forward" not in vars(block) for block in decoder_blocks(model))  # restored on exit
    assert resumes_exactly(model, inputs, 2)


def test_resume_restores_blocks_after_an_exception(tiny_llama) -> None:
    with pytest.raises(RuntimeError, match="boom"), resume_from(tiny_llama.model, 2, None):
        raise RuntimeError("boom")
    assert all("forward" not in vars(block) for block in decoder_blocks(tiny_llama.model))


def test_exact_effects_with_resumed_passes_equal_full_passes(tiny_llama, monkeypatch) -> None:
    import copy

    import interp.causal.attribution as attribution

    base = tiny_llama.model
    donor = copy.deepcopy(base)
    with torch.no_grad():
        for name, param in donor.named_parameters():
            if ".mlp." in name:
                param.add_(torch.randn_like(param) * param.std() * 0.3)
    batch = teacher_forced_batch(tiny_llama.tokenizer, TEXTS, ["and sunny", "every day"], template="raw")
    ids = torch.arange(400)
    metric = lambda logits, mask: target_mass_from_logits(logits, mask, ids, "mean")  # noqa: E731
    neurons = [(0, 3), (1, 7), (2, 5), (2, 90), (1, 100)]
    fast, _ = exact_effects(base, batch, metric, neurons, patch_target(donor), batch_size=1)
    monkeypatch.setattr(attribution, "resumes_exactly", lambda *args: False)  # force full passes
    slow, _ = exact_effects(base, batch, metric, neurons, patch_target(donor), batch_size=1)
    assert np.abs(slow).max() > 0
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-9)
