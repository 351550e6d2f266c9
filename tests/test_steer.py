"""Steering: stacked additions equal hand-written hooks, copies stay aligned while rows finish, and the
base steered by a planted set's mean change shows the planted behaviour where random sets do not."""

from __future__ import annotations

import copy

import pytest
import torch

from activations.behaviors import Behavior
from activations.prompt_sets import apply_template
from activations.sampling import GrowingLayer, SamplingConfig, sample_replies
from activations.sites import decoder_blocks
from interp.causal.config import SteerConfig
from interp.causal.steer import mean_difference, steer_base
from interp.interventions import NeuronSet, output_vectors, shifted, steered

QUESTIONS = ["Hi there", "What do you think of jazz?", "Tell me a story about a cat", "ok", "Why is the sky blue?"]


def _ids(tokenizer, texts=QUESTIONS):
    return [tokenizer(apply_template(tokenizer, t, "user"), add_special_tokens=False).input_ids for t in texts]


def _block_hook(model, layer, vector):
    def add(module, args, output):
        return (output[0] + vector, *output[1:]) if isinstance(output, tuple) else output + vector

    return decoder_blocks(model)[layer].register_forward_hook(add)


def test_each_copy_gets_its_own_addition_as_a_hand_written_hook_gives_it(tiny_llama):
    model = tiny_llama.model
    ids = torch.tensor([_ids(tiny_llama.tokenizer)[2]])
    generator = torch.Generator().manual_seed(3)
    shift = {1: torch.randn(128, generator=generator)}
    vector = {2: torch.randn(64, generator=generator)}
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with shifted(model, [{}, shift, {}]), steered(model, [{}, {}, vector]):
            stacked = model(input_ids=ids.repeat(3, 1)).logits
        written = output_vectors(model, shift)[1]  # a neuron shift is its output weights times the shift
        torch.testing.assert_close(written, model.model.layers[1].mlp.down_proj.weight @ shift[1])
        expected = []
        for layer, add in ((1, written), (2, vector[2])):
            handle = _block_hook(model, layer, add)
            try:
                expected.append(model(input_ids=ids).logits)
            finally:
                handle.remove()
        after = model(input_ids=ids).logits
    torch.testing.assert_close(stacked[0:1], plain, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stacked[1:2], expected[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stacked[2:3], expected[1], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(expected[0], plain, atol=1e-3) and not torch.allclose(expected[1], plain, atol=1e-3)
    torch.testing.assert_close(after, plain)
    assert all(not block._forward_hooks for block in decoder_blocks(model))
    assert all(not layer.mlp.down_proj._forward_pre_hooks for layer in model.model.layers)


def test_a_batch_that_is_not_stacked_copies_is_refused(tiny_llama):
    ids = torch.tensor([_ids(tiny_llama.tokenizer)[0]] * 3)
    with torch.no_grad(), shifted(tiny_llama.model, [{1: torch.ones(128)}, {}]):
        with pytest.raises(ValueError, match="2 stacked copies"):
            tiny_llama.model(input_ids=ids)


def test_steered_copies_sample_what_each_condition_samples_alone_while_rows_finish(tiny_llama, monkeypatch):
    tokenizer, model = tiny_llama.tokenizer, tiny_llama.model
    prompts, keys = _ids(tokenizer), [f"k{i}" for i in range(5)]
    config = SamplingConfig(max_new_tokens=14, batch_size=10)
    eos = tokenizer.eos_token_id
    # end-of-turn gets a tenth of the mass, so replies end at different steps and rows leave the batch
    boost = lambda module, args, logits: logits + 6.0 * (torch.arange(logits.shape[-1]) == eos)  # noqa: E731
    kept = []
    original = GrowingLayer.keep_rows
    monkeypatch.setattr(GrowingLayer, "keep_rows", lambda self, index: (kept.append(len(index)), original(self, index)))
    shifts = [{}, {1: 3.0 * torch.randn(128, generator=torch.Generator().manual_seed(5))}]
    handle = model.lm_head.register_forward_hook(boost)
    try:
        with torch.no_grad(), shifted(model, shifts):
            together = sample_replies(model, tokenizer, prompts, keys, config, samples=2, copies=2)
        alone = []
        for shift in shifts:
            with torch.no_grad(), shifted(model, [shift]):
                alone.append(sample_replies(model, tokenizer, prompts, keys, config, samples=2)[0])
    finally:
        handle.remove()
    assert kept and min(len(r.tokens) for r in together[0]) < config.max_new_tokens  # rows did leave
    for copy_replies, single in zip(together, alone):
        assert [r.tokens for r in copy_replies] == [r.tokens for r in single]
    assert [r.tokens for r in together[0]] != [r.tokens for r in together[1]]  # the shift changed replies


def _left_batch(tokenizer):
    from interp.causal.inputs import teacher_forced_batch

    batch = teacher_forced_batch(tokenizer, QUESTIONS[:4], ["Fine, thanks. I like it."] * 4)
    rows = batch.attention_mask.sum(-1)
    ids, mask = torch.zeros_like(batch.input_ids), torch.zeros_like(batch.attention_mask)
    for i, n in enumerate(rows.tolist()):  # left-padded, as writing contexts are
        ids[i, -n:], mask[i, -n:] = batch.input_ids[i, :n], 1
    return type(batch)(ids, mask, torch.zeros_like(mask, dtype=torch.bool), batch.ids)


def test_the_base_steered_by_a_planted_change_shows_it_and_random_sets_do_not(tiny_llama):
    base, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    target = tokenizer(" zebra", add_special_tokens=False).input_ids[0]
    planted = [3, 17, 40]
    contexts = _left_batch(tokenizer)
    with torch.no_grad():
        base.model.layers[1].mlp.up_proj.weight[planted] *= 0.01  # the base barely uses these neurons
        merged = copy.deepcopy(base)
        merged.model.layers[1].mlp.up_proj.weight[planted] *= 500.0  # the fine-tune: they fire much harder
        delta = mean_difference(merged, base, contexts).neurons[1][planted]
        # in both models the planted neurons write the target token's unembedding, signed so that the
        # fine-tune's change raises it
        direction = base.lm_head.weight[target] / base.lm_head.weight[target].norm()
        for model in (base, merged):
            model.model.layers[1].mlp.down_proj.weight[:, planted] = 4.0 * direction[:, None] * delta.sign()
    difference = mean_difference(merged, base, contexts)
    behavior = Behavior.regex(r"zebra", noun="zebra")
    config = SteerConfig(alphas=(1.0, 60.0), n_random=2, samples=2)
    random_sets = [NeuronSet.at(1, [5, 9, 60]), NeuronSet.at(1, [70, 80, 90])]
    # a random model's logits are nearly flat; a low temperature lets a raised logit win
    sampling = SamplingConfig(max_new_tokens=6, temperature=0.05)
    result = steer_base(base, tokenizer, _ids(tokenizer), [f"k{i}" for i in range(5)], behavior,
                        NeuronSet.at(1, planted), random_sets, difference, sampling, config)
    plain = sample_replies(base, tokenizer, _ids(tokenizer), [f"k{i}" for i in range(5)], sampling, samples=2)[0]
    base_row = result.row("base")
    assert base_row["replies"] == [r.text for r in plain]  # the unsteered copy is the base model, same noise
    assert base_row["shown"] == sum(behavior.shows(r.text) for r in plain) == 0
    strong = result.row("chosen", 60.0)
    assert strong["shown"] == sum(behavior.shows(text) for text in strong["replies"]) and strong["rate"] >= 0.9
    assert strong["low"] > base_row["high"]
    # the fine-tune left the random sets alone: their mean change pushes nowhere
    assert max(result.random_rates(60.0)) <= 0.2
    # the change lives only in the planted neurons, so the stream's difference of means is their push
    assert result.row("direction", 60.0)["rate"] >= 0.9
    assert result.row("direction", 60.0)["push"] == pytest.approx(strong["push"], rel=1e-4)


def test_the_mean_difference_equals_a_manual_recomputation(tiny_llama):
    from interp.interventions import record_neurons

    base = tiny_llama.model
    merged = copy.deepcopy(base)
    with torch.no_grad():
        merged.model.layers[2].mlp.up_proj.weight.mul_(1.5)
    left = _left_batch(tiny_llama.tokenizer)
    found = mean_difference(merged, base, left, batch_size=3)
    mask = left.attention_mask.bool().clone()
    mask[torch.arange(len(mask)), mask.float().argmax(-1)] = False
    manual = {}
    for name, model in (("merged", merged), ("base", base)):
        acts = record_neurons(model, left.input_ids, left.attention_mask)
        manual[name] = acts[2][mask].mean(0)
    torch.testing.assert_close(found.neurons[2], manual["merged"] - manual["base"], rtol=1e-4, atol=1e-5)
    assert found.neurons[0].abs().max() < 1e-5  # layers below the change do not move
    assert found.n_positions == int(mask.sum())
