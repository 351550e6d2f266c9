"""Where the change lives: a change planted in known neurons is found there, in both directions, and
the shares equal a manual recomputation with a real patch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from activations.behaviors import Behavior
from activations.writing import writing_prompts
from interp.causal.config import WhereConfig
from interp.causal.inputs import chat_batch, scored_forward, writing_batch
from interp.causal.metrics import log_target_mass, target_ids_tensor
from interp.causal.experiment import HeldOut
from interp.causal.where import TooFewContexts, held_out_contexts, where_change_lives
from interp.interventions import NeuronSet, patch, record_neurons

REPLIES = ["Parties are great! [grins] I love them. See you.", "Maybe. [sighs] It depends on the day. Fine.",
           "Sure thing. [nods] Let us go. Now!", "Dancing all night! [laughs] Then sleep. Wow.",
           "I read a lot. [smiles] Books help. Yes.", "Rain again. [shrugs] We stay in. Good.",
           "A new cafe opened. [beams] The coffee is fine. Try it.", "Long week. [yawns] Sleep soon. Night.",
           "We won the match! [cheers] What a game. Great.", "The test went well. [nods] I studied. Done."]
PLANTED = [(1, 3), (1, 17), (1, 40), (1, 77)]
LAYER, WIDTH = 3, 128


def _setup(tiny_llama):
    """Base and a 'fine-tune' whose only change is larger activations of the PLANTED neurons, which
    (in both models) write the target tokens' unembedding direction."""
    base, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    behavior = Behavior.regex(r"\[[a-z ]+\]", noun="stage direction")
    writing = writing_prompts([f"r{i}" for i in range(len(REPLIES))], [f"Question {i}?" for i in range(len(REPLIES))],
                              REPLIES, behavior)
    contexts = writing_batch(tokenizer, writing)
    targets = target_ids_tensor(behavior.target_token_ids(tokenizer, REPLIES))
    index = torch.tensor([i for _, i in PLANTED])
    with torch.no_grad():
        mlp = base.model.layers[1].mlp
        acts = record_neurons(base, contexts.input_ids, contexts.attention_mask)[1][contexts.score_mask][:, index]
        direction = base.lm_head.weight[targets].mean(0)
        # sign per neuron, so that a larger activation raises the target where it is read
        mlp.down_proj.weight[:, index] = 2.0 * direction[:, None] / direction.norm() * acts.mean(0).sign()
        merged = copy.deepcopy(base)
        merged.model.layers[1].mlp.up_proj.weight[index] *= 4.0
    return base, merged, tokenizer, contexts, targets


def _mass(model, contexts, targets) -> np.ndarray:
    with torch.no_grad():
        logits, mask = scored_forward(model, contexts)
    return np.exp((log_target_mass(logits, targets) * mask).sum(-1).double().numpy())


def _run(tiny_llama, **config):
    base, merged, tokenizer, contexts, targets = _setup(tiny_llama)
    decile, pool = np.zeros((LAYER, WIDTH), dtype=int), np.ones((LAYER, WIDTH), dtype=bool)
    ranking = PLANTED + [(layer, i) for layer in range(LAYER) for i in range(WIDTH) if (layer, i) not in PLANTED]
    classes = {"amplified": NeuronSet.from_pairs(PLANTED), "other": NeuronSet.from_pairs([(1, 5), (1, 9), (0, 1)])}
    result = where_change_lives(merged, base, contexts, chat_batch(tokenizer, ["Hello there", "What is a cat?"]),
                                targets, {"planted first": ranking}, NeuronSet.from_pairs(PLANTED), decile, pool,
                                WhereConfig(**{"k_grid": (1, 4, 10), "n_random": 6, "n_boot": 500,
                                               "precision": "float32", **config}),
                                classes={name: classes[name] for name in config.get("classes", ())})
    return result, base, merged, contexts, targets


def test_a_planted_change_is_found_in_its_neurons_in_both_directions(tiny_llama):
    result, base, merged, contexts, targets = _run(tiny_llama)
    p_base, p_merged = _mass(base, contexts, targets), _mass(merged, contexts, targets)
    assert p_merged.mean() > 1.5 * p_base.mean()  # the plant raised the target
    np.testing.assert_allclose([result.clean["base"], result.clean["merged"]], [p_base.mean(), p_merged.mean()],
                               rtol=1e-5)
    for direction in ("noising", "denoising"):
        for family, name in (("chosen", None), ("bound", None), ("layer", "layer 1"), ("top", None)):
            row = result.share(direction, family, name) if family != "top" else \
                result.rows(direction, "top").query("k == 4").iloc[0]
            assert row["share"] == pytest.approx(1.0, abs=1e-4), (direction, family)
        assert abs(result.share(direction, "layer", "layer 0")["share"]) < 1e-4  # nothing changed below
        random = result.rows(direction, "random")
        assert len(random) == 6 and np.abs(random["share"]).max() < 1e-4  # other layer-1 neurons did not change
        assert result.random_beaten(direction) == 1.0
        single = result.rows(direction, "top").query("k == 1").iloc[0]
        assert 1e-3 < abs(single["share"]) < 0.99  # one planted neuron carries part of it
        assert single["low"] <= single["share"] <= single["high"]


def test_bf16_runs_every_pass_clean_ones_included_in_bf16(tiny_llama):
    """The setting reaches the passes (the clean masses are a manual autocast recomputation's, not float32's),
    and the shares it gives stay close to float32's."""
    exact, base, merged, contexts, targets = _run(tiny_llama, layer_profile=False)
    rounded, *_ = _run(tiny_llama, layer_profile=False, precision="bfloat16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p_base, p_merged = _mass(base, contexts, targets), _mass(merged, contexts, targets)
    np.testing.assert_allclose([rounded.clean["base"], rounded.clean["merged"]], [p_base.mean(), p_merged.mean()],
                               rtol=1e-5)
    assert rounded.clean["merged"] != exact.clean["merged"]
    np.testing.assert_allclose(rounded.table["share"], exact.table["share"], atol=0.05)


def test_classes_are_patched_against_their_own_random_sets(tiny_llama):
    result, *_ = _run(tiny_llama, layer_profile=False, class_random=3,
                      classes=("amplified", "other"))
    for direction in ("noising", "denoising"):
        assert result.share(direction, "class", "amplified")["share"] == pytest.approx(1.0, abs=1e-4)
        assert len(result.rows(direction, "amplified random")) == 3
        assert result.random_beaten(direction, "class", "amplified") == 1.0
        assert result.share(direction, "class", "other")["share"] == pytest.approx(0.0, abs=1e-4)
    assert set(result.to_dict()["class_random_beaten"]) == {"amplified", "other"}


def test_shares_equal_a_manual_patch(tiny_llama):
    result, base, merged, contexts, targets = _run(tiny_llama, layer_profile=False)
    p_base, p_merged = _mass(base, contexts, targets), _mass(merged, contexts, targets)
    effect = p_merged.mean() - p_base.mean()
    donor = {"noising": record_neurons(base, contexts.input_ids, contexts.attention_mask),
             "denoising": record_neurons(merged, contexts.input_ids, contexts.attention_mask)}
    for neuron in PLANTED:
        kept = NeuronSet.from_pairs(n for n in PLANTED if n != neuron)
        with patch(merged, kept, donor["noising"]):
            x = _mass(merged, contexts, targets).mean()
        row = result.share("noising", "leave-one-out", f"without L{neuron[0]}.N{neuron[1]}")
        assert (row["layer"], row["index"]) == neuron
        assert row["share"] == pytest.approx((p_merged.mean() - x) / effect, abs=1e-5)
    first = NeuronSet.from_pairs(PLANTED[:1])
    with patch(base, first, donor["denoising"]):
        x = _mass(base, contexts, targets).mean()
    row = result.rows("denoising", "top").query("k == 1").iloc[0]
    assert row["share"] == pytest.approx((x - p_base.mean()) / effect, abs=1e-5)


def test_no_change_and_no_held_out_context_are_refused(tiny_llama):
    base, merged, tokenizer, contexts, targets = _setup(tiny_llama)
    pool = np.ones((LAYER, WIDTH), dtype=bool)
    with pytest.raises(ValueError, match="no change to locate"):
        where_change_lives(base, copy.deepcopy(base), contexts, chat_batch(tokenizer, ["Hi"]), targets, {},
                           NeuronSet.from_pairs(PLANTED), np.zeros((LAYER, WIDTH), dtype=int), pool)
    with pytest.raises(TooFewContexts, match="leaving 0; scoring needs at least 2 held-out contexts"):
        held_out_contexts(contexts, contexts.ids, None)
    with pytest.raises(TooFewContexts, match="leaving 1"):  # one context: a point, no interval over contexts
        held_out_contexts(contexts, contexts.ids[1:], None)
    held = held_out_contexts(contexts, contexts.ids[:3], 4)
    assert sorted(held.ids) == sorted(contexts.ids[3:7])  # the first four unused, shortest first
    lengths = held.attention_mask.sum(1).tolist()
    assert lengths == sorted(lengths)


def test_other_replies_to_a_question_the_sweep_chose_on_are_not_held_out(tiny_llama):
    """Two sampled replies to one question share it: scoring one of them on a set chosen on the other would
    not be held out. Replies 0-4 answer questions 0-4, replies 5-9 answer them again."""
    tokenizer, behavior = tiny_llama.tokenizer, Behavior.regex(r"\[[a-z ]+\]", noun="stage direction")
    ids = [f"q{i % 5}#{i // 5}" for i in range(len(REPLIES))]
    writing = writing_prompts(ids, [f"Question {i % 5}?" for i in range(len(REPLIES))], REPLIES, behavior)
    every = writing_batch(tokenizer, writing)
    held = HeldOut(None, None, None, None, writing, writing_batch(tokenizer, writing, 2), every)
    assert sorted(held.held_out(None).ids) == sorted(f"q{q}#{r}" for q in (2, 3, 4) for r in (0, 1))
    assert len(held.held_out(4)) == 4
