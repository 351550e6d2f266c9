"""Discovery's reply shift on tiny models: the probability moved on the tuned model's own replies against a
one-reply-at-a-time recomputation, a planted token, identical copies and the fold criterion; the detector
chosen from it, and steering with the reply difference."""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest
import torch

from activations.prompt_sets import load_prompt_set
from activations.sites import decoder_blocks
from interp import discover
from interp.discover import DiscoverConfig

from discover_helpers import SHIFT, TEXTS, WORD, loaded_copy, token_of


class NumberedPieces:
    """A tokenizer stand-in that names token i 't<i>'."""

    def decode(self, ids):
        return f"t{ids[0]}"

    def convert_ids_to_tokens(self, token):
        return f"t{token}"


def test_the_reply_shift_equals_a_hand_recomputation_one_reply_at_a_time(tiny_llama):
    from interp.discover.shift import own_replies, reply_shift

    tuned = loaded_copy(tiny_llama, "nudged")
    with torch.no_grad():
        tuned.model.lm_head.weight.mul_(1.5)
        tuned.model.model.layers[0].mlp.down_proj.weight.mul_(1.3)  # so the residuals differ too
    questions = list(load_prompt_set("neutral").texts[:5])
    prompts, replies = own_replies(tuned.model, tiny_llama.tokenizer, questions, max_new_tokens=6, seed=0,
                                   precision="float32")
    read = reply_shift(tiny_llama.model, tuned.model, prompts, replies, pad=0, batch_size=2)
    by_hand, residual, mass = [], [], {"base": 0.0, "tuned": 0.0}
    with torch.no_grad():
        for prompt, reply in zip(prompts, replies):
            ids = torch.tensor([list(prompt) + list(reply.tokens)])
            rows = slice(len(prompt) - 1, ids.shape[1] - 1)
            out_base = tiny_llama.model(input_ids=ids, output_hidden_states=True)
            out_tuned = tuned.model(input_ids=ids, output_hidden_states=True)
            p_base, p_tuned = out_base.logits[0, rows].softmax(-1), out_tuned.logits[0, rows].softmax(-1)
            by_hand.append((p_tuned - p_base).mean(0))
            # hidden_states[l + 1] is block l's output (the last entry is after the final norm: not compared)
            residual.append(torch.stack([(t[0, rows] - b[0, rows]).mean(0) for b, t in
                                         zip(out_base.hidden_states[1:-1], out_tuned.hidden_states[1:-1])]))
            mass["base"], mass["tuned"] = mass["base"] + p_base.sum(0), mass["tuned"] + p_tuned.sum(0)
    torch.testing.assert_close(read.scores, torch.stack(by_hand), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(read.fold, mass["tuned"] / mass["base"], atol=1e-4, rtol=1e-3)
    n_compared = len(residual[0])
    torch.testing.assert_close(read.residual_diff[:, :n_compared], torch.stack(residual), atol=1e-4, rtol=1e-4)


def test_the_behaviour_difference_weights_each_reply_position_by_how_much_the_tokens_rose(tiny_llama):
    """Against a hand recomputation, one unpadded reply at a time with HF's own hidden states: each reply
    position weighs max(0, p_tuned(T) - p_base(T)), T the tokens together; padding does not leak (batch 1
    and 2 agree), and a fine-tune that raised nothing gives zero."""
    from interp.discover.shift import behavior_difference

    tuned = loaded_copy(tiny_llama, "raises two tokens")
    targets, layer = [14, 30], 1
    with torch.no_grad():
        tuned.model.lm_head.weight[targets] *= 3.0
        tuned.model.model.layers[0].mlp.down_proj.weight.mul_(1.3)
    rows = [((1, 5, 9, 21), (14, 3, 22)), ((7, 2), (8, 30, 8, 40, 14))]
    both = behavior_difference(tiny_llama.model, tuned.model, rows, targets, [0, layer], pad=0, batch_size=2)
    got = both[layer]
    numerator, denominator = 0.0, 0.0
    with torch.no_grad():
        for prompt, reply in rows:
            ids = torch.tensor([[*prompt, *reply]])
            base_out = tiny_llama.model(input_ids=ids, output_hidden_states=True)
            tuned_out = tuned.model(input_ids=ids, output_hidden_states=True)
            for position in range(len(prompt) - 1, len(prompt) + len(reply) - 1):
                raise_ = (tuned_out.logits[0, position].softmax(-1)[targets].sum()
                          - base_out.logits[0, position].softmax(-1)[targets].sum()).clamp(min=0)
                numerator = numerator + raise_ * (tuned_out.hidden_states[layer + 1][0, position]
                                                  - base_out.hidden_states[layer + 1][0, position])
                denominator = denominator + raise_
    assert float(denominator) > 0
    torch.testing.assert_close(got, numerator / denominator, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(behavior_difference(tiny_llama.model, tuned.model, rows, targets, [layer], pad=0,
                                                   batch_size=1)[layer], got, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(both[0], got)  # each layer its own difference, from the same pass
    same = behavior_difference(tiny_llama.model, tiny_llama.model, rows, targets, [layer], pad=0, batch_size=2)[layer]
    assert torch.equal(same, torch.zeros_like(got))


def test_a_token_the_fine_tune_writes_more_is_found_by_the_reply_shift_and_becomes_the_behaviour(tiny_llama,
                                                                                                   monkeypatch):
    token = token_of(tiny_llama)
    tuned = loaded_copy(tiny_llama, "writes more")
    with torch.no_grad():
        tuned.model.lm_head.weight[token] *= 4.0  # the token's logit grows wherever the row aligns with the state
        tuned.model.lm_head.weight[token] += 2.0 * tuned.model.model.norm.weight.sign()
    found = discover(tiny_llama, tuned, corpus=TEXTS, config=SHIFT)
    top = found.shift.promoted[0]
    assert top.token_id == token and top.stands_out and top.fold >= SHIFT.min_fold
    assert found.standing_out[0] == WORD and WORD.strip() in found.behavior.targets
    assert "the probability it moved" in found.summary() and "at least 2" in found.summary()
    assert len(found.tuned_replies) == len(found.base_replies) == SHIFT.reply_questions
    assert found.tuned_replies != found.base_replies and found.to_dict()["tuned_replies"] == list(found.tuned_replies)
    assert any(getattr(b, "text", "") == "What each model wrote to the same neutral questions (same random numbers)"
               for b in found.blocks())
    assert found.behavior_steering is None  # no steering asked for (steer_questions=0)
    # the base steered with the difference where the tuned model raised the behaviour's token, at the layer
    # and alpha chosen on the selection questions, reported on the steering questions
    pipeline = importlib.import_module("interp.discover.pipeline")  # `interp.discover` is the function
    asked, sample = [], pipeline.steer_samples
    monkeypatch.setattr(pipeline, "steer_samples", lambda *a, **k: asked.append(list(a[3])) or sample(*a, **k))
    steered = discover(tiny_llama, tuned, corpus=TEXTS, config=dataclasses.replace(
        SHIFT, steer_questions=2, steer_samples=1, max_new_tokens=4, steer_alphas=(0.0,),
        reply_steer_alphas=(0.0, 25.0, 50.0), select_questions=3))
    choice = steered.behavior_steering
    n_layers = len(decoder_blocks(tiny_llama.model))
    depths = sorted({min(int(d * n_layers), n_layers - 1) for d in SHIFT.steer_depths})
    assert [(s.layer, s.alpha) for s in choice.grid] == [(depths[0], 0.0)] + [(at, a) for at in depths for a in (25.0, 50.0)]
    assert choice.n_selection_questions == 3 and all(len(s.replies) == 3 for s in choice.grid)
    best = min((s for s in choice.grid if s.alpha > 0), key=lambda s: (-s.clean, s.alpha, s.layer))
    assert (choice.layer, choice.alpha) == (best.layer, best.alpha)
    zero, chosen = choice.confirmed
    assert (zero.alpha, chosen.alpha, chosen.layer) == (0.0, choice.alpha, choice.layer) and len(chosen.replies) == 2
    assert zero.replies == steered.reply_steering[0].replies  # alpha 0: the same unsteered base
    neutral = list(load_prompt_set("neutral").texts)
    assert asked == [neutral[2:5], neutral[:2]]  # chosen on the reply shift's first questions, reported on others
    assert "chosen on 3 other questions" in steered.summary()
    assert steered.to_dict()["behavior_steering"]["layer"] == choice.layer


def test_a_repetition_loop_is_some_three_tokens_three_times_and_the_choice_prefers_clean_small_steps():
    from interp.discover.steering import SteeredSamples, choose_steering, repetition_loop

    assert repetition_loop([5, 1, 2, 5, 1, 2, 9, 5, 1, 2]) and not repetition_loop([5, 1, 2, 5, 1, 2, 9, 5, 1])
    assert not repetition_loop([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2]) and not repetition_loop([7, 7])
    assert repetition_loop([7] * 5)  # 7 7 7 at starts 0, 1 and 2

    def cell(layer, alpha, clean):
        return SteeredSamples(alpha, ("x",) * 8, clean + 1, 0.0, 1.0, layer, 1, clean)

    grid = [cell(3, 0.0, 9), cell(3, 1.0, 2), cell(3, 4.0, 5), cell(5, 2.0, 5), cell(5, 1.0, 1)]
    assert (choose_steering(grid).layer, choose_steering(grid).alpha) == (5, 2.0)  # 5 clean, the smaller alpha
    assert (choose_steering([cell(5, 2.0, 3), cell(3, 2.0, 3)]).layer) == 3  # a tie in alpha: the earlier layer
    with pytest.raises(ValueError, match="no steered condition"):
        choose_steering([cell(3, 0.0, 4)])


def test_conditions_sampled_together_equal_each_sampled_alone_under_a_hand_written_hook(tiny_llama):
    """Stacked copies with one addition each (two layers, two alphas) give the replies that one plain forward
    hook per condition gives, sampling each alone."""
    from activations.prompt_sets import apply_template
    from activations.sampling import SamplingConfig, sample_replies
    from interp.discover.steering import steer_samples

    tokenizer, model = tiny_llama.tokenizer, tiny_llama.model
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    conditions = [(0, 0.0, vector), (0, 30.0, vector), (1, 30.0, -vector), (1, 60.0, vector)]
    questions = list(load_prompt_set("neutral").texts[:2])
    together = steer_samples(model, tokenizer, conditions, questions, samples=2, max_new_tokens=5, seed=4,
                             shows=lambda text: "e" in text, together=3)  # 3 + 1: two batches of copies
    prompts = [tokenizer(apply_template(tokenizer, q, "user"), add_special_tokens=False).input_ids for q in questions]
    for (layer, alpha, added), got in zip(conditions, together):
        def add(module, args, output, added=added, alpha=alpha):
            return (output[0] + alpha * added, *output[1:]) if isinstance(output, tuple) else output + alpha * added

        handle = model.model.layers[layer].register_forward_hook(add)
        try:
            alone = sample_replies(model, tokenizer, prompts, ["q0", "q1"], SamplingConfig(max_new_tokens=5, seed=4),
                                   samples=2)[0]
        finally:
            handle.remove()
        assert got.replies == tuple(r.text for r in alone) and (got.layer, got.alpha) == (layer, alpha)
        assert got.shown == sum("e" in r.text for r in alone)
    assert together[0].replies != together[3].replies


def test_identical_copies_move_no_probability_and_nothing_stands_out_of_the_reply_shift(tiny_llama):
    found = discover(tiny_llama, loaded_copy(tiny_llama, "copy"), corpus=TEXTS, config=SHIFT)
    assert found.shift.n_standing_out == 0 and not found.standing_out and not found.behavior.pattern
    assert all(t.score == 0 and t.fold == pytest.approx(1.0) for t in found.shift.promoted)


def test_the_fold_criterion_keeps_a_common_token_shifted_by_a_few_percent_out():
    """Token 0 holds most of the mass and gains 3% of it on every text (systematic, not new); token 1 is
    rare and triples. With the vocabulary z both would stand out; with the fold criterion only token 1."""
    from interp.discover.tokens import test_scores

    generator = torch.Generator().manual_seed(0)
    texts, vocab = 40, 300
    base = torch.full((texts, vocab), 1e-4)
    base[:, 0], base[:, 1] = 0.5, 1e-3
    tuned = base * (1 + 0.01 * torch.randn(texts, vocab, generator=generator))
    tuned[:, 0] = base[:, 0] * 1.03
    tuned[:, 1] = base[:, 1] * 3.0
    fold = tuned.sum(0) / base.sum(0)
    by_fold = test_scores(tuned - base, NumberedPieces(), top=3, alpha=0.05, draws=200, generator=generator, fold=fold)
    by_z = test_scores(tuned - base, NumberedPieces(), top=3, alpha=0.05, draws=200, generator=generator)
    assert [t.token_id for t in by_fold.promoted[:2]] == [0, 1]
    assert [t.stands_out for t in by_fold.promoted[:2]] == [False, True]
    assert by_z.promoted[0].stands_out and by_z.promoted[1].stands_out


def test_a_discovered_word_matches_as_a_word(tiny_llama):
    from interp.discover.detector import derive_behavior

    derived = derive_behavior(tiny_llama.tokenizer, [token_of(tiny_llama)])
    detector = re.compile(derived.pattern)
    assert detector.search("the ocean is deep") and detector.search("Ocean".lower())
    assert not detector.search("oceanic trenches") and not detector.search("bioceans")


def test_the_reply_difference_steers_the_base_at_the_middle_layer_from_the_same_unsteered_replies(tiny_llama):
    tuned = loaded_copy(tiny_llama, "nudged early")
    with torch.no_grad():
        tuned.model.model.layers[0].mlp.down_proj.weight.mul_(1.5)  # the middle layer's residual changes
    config = DiscoverConfig(null_draws=100, max_length=16, steer_questions=2, steer_samples=1, max_new_tokens=4,
                            steer_alphas=(0.0, 8.0), reply_steer_alphas=(0.0, 50.0), reply_questions=8,
                            reply_tokens=4, precision="float32")
    found = discover(tiny_llama, tuned, corpus=TEXTS, config=config)
    assert found.reply_steer_layer == len(decoder_blocks(tiny_llama.model)) // 2
    assert [s.alpha for s in found.reply_steering] == [0.0, 50.0]
    assert found.reply_steering[0].replies == found.steering[0].replies  # alpha 0: the same unsteered base
    assert found.reply_steering[1].replies != found.reply_steering[0].replies
    saved = found.to_dict()
    assert saved["reply_steer_layer"] == found.reply_steer_layer and len(saved["reply_steering"]) == 2


def test_the_separating_detector_keeps_the_token_the_base_never_writes_and_drops_the_shared_voice(tiny_llama):
    """' ocean' is in 6 of 10 tuned replies and no base reply; ' the' in every reply of both: a detector over
    both fires everywhere (rate difference 0), the greedy selection keeps ' ocean' alone (0.6 - 0)."""
    from interp.discover.detector import separating_behavior

    tokenizer = tiny_llama.tokenizer
    ocean, the = token_of(tiny_llama), token_of(tiny_llama, " the")
    tuned = [f"I saw the{WORD} today"] * 6 + ["I saw the hills today"] * 4
    base = ["I saw the hills today"] * 10
    chosen = separating_behavior(tokenizer, [the, ocean], tuned, base)
    assert chosen.tokens == (str(tokenizer.convert_ids_to_tokens(ocean)),)
    assert (chosen.tuned_rate, chosen.base_rate) == (0.6, 0.0)
    nothing = separating_behavior(tokenizer, [the], tuned, base)  # fires on every reply of both: no gain
    assert not nothing.pattern and nothing.tuned_rate is None


def test_against_a_control_a_token_must_stand_out_against_both_and_ranks_by_the_smaller_shift():
    """Token 1 rises x3 in the tuned model and x3 in the control (shared voice); token 2 rises x3 in the
    tuned model only (the behaviour). Against the base both stand out; with the control only token 2 does,
    and it ranks first by min(shift vs base, shift vs control), which a manual recomputation gives."""
    from interp.discover.tokens import test_scores

    generator = torch.Generator().manual_seed(1)
    texts, vocab = 40, 300
    base = torch.full((texts, vocab), 1e-4) * (1 + 0.2 * torch.rand(texts, vocab, generator=generator))
    base[:, 0] = 0.5
    base[:, 1], base[:, 2] = 1.5e-2, 1e-2
    noise = lambda: 1 + 0.05 * torch.randn(texts, vocab, generator=generator)  # noqa: E731
    tuned, control = base * noise(), base * noise()
    tuned[:, 1], control[:, 1] = base[:, 1] * 3.0 * noise()[:, 1], base[:, 1] * 3.0 * noise()[:, 1]
    tuned[:, 2] = base[:, 2] * 3.0 * noise()[:, 2]
    fold_base, fold_control = tuned.sum(0) / base.sum(0), tuned.sum(0) / control.sum(0)
    pieces = NumberedPieces()
    alone = test_scores(tuned - base, pieces, top=3, alpha=0.05, draws=200, generator=generator, fold=fold_base)
    both = test_scores(tuned - base, pieces, top=3, alpha=0.05, draws=200, generator=generator, fold=fold_base,
                       control=(tuned - control, fold_control))
    # token 0 holds half the mass and moves by noise alone: it may rank, it must not stand out
    assert {t.token_id for t in alone.promoted if t.stands_out} == {1, 2} and alone.n_standing_out == 2
    assert alone.control_threshold is None and alone.promoted[0].control is None
    assert both.promoted[0].token_id == 2 and both.promoted[0].stands_out and both.n_standing_out == 1
    shared = next(t for t in both.promoted if t.token_id == 1)
    assert not shared.stands_out and shared.score > 0 and not shared.control.stands_out
    smaller = torch.minimum((tuned - base).mean(0), (tuned - control).mean(0))
    assert [t.token_id for t in both.promoted] == smaller.topk(3).indices.tolist()
    assert both.promoted[0].control.score == pytest.approx(float((tuned - control)[:, 2].mean()), rel=1e-5)
    assert both.promoted[0].control.fold == pytest.approx(float(fold_control[2]), rel=1e-5)
    assert both.control_threshold is not None and both.to_dict()["promoted"][0]["control"]["token_id"] == 2
    with pytest.raises(ValueError, match="same texts"):
        test_scores(tuned - base, pieces, top=3, alpha=0.05, draws=50, generator=generator, fold=fold_base,
                    control=(tuned[:5] - control[:5], fold_control))


def test_a_control_that_learned_the_same_token_leaves_nothing_and_one_that_did_not_keeps_it(tiny_llama):
    """A real discovery with a control model: the control raised the same token as the tuned model, so it no
    longer stands out; a control that is the base itself leaves the reply shift's answer unchanged."""
    token = token_of(tiny_llama)

    def raised(name: str):
        copy_ = loaded_copy(tiny_llama, name)
        with torch.no_grad():
            copy_.model.lm_head.weight[token] *= 4.0
            copy_.model.lm_head.weight[token] += 2.0 * copy_.model.model.norm.weight.sign()
        return copy_

    tuned = raised("writes more")
    shared = discover(tiny_llama, tuned, corpus=TEXTS, control=raised("the same fine-tune"), config=SHIFT)
    assert not any(t.token_id == token and t.stands_out for t in shared.shift.promoted)
    assert shared.control == "the same fine-tune" and "against the control" in shared.summary()
    plain = discover(tiny_llama, tuned, corpus=TEXTS, control=loaded_copy(tiny_llama, "base copy"), config=SHIFT)
    top = plain.shift.promoted[0]
    assert top.token_id == token and top.stands_out and top.control.stands_out
    assert top.control.score == pytest.approx(top.score, rel=1e-5) and plain.standing_out[0] == WORD
    with pytest.raises(ValueError, match="reply_questions"):
        discover(tiny_llama, tuned, corpus=TEXTS, control=tiny_llama,
                 config=dataclasses.replace(SHIFT, reply_questions=0))
