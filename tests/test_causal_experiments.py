"""Causal experiments on tiny models: batches, cross-patched generation, patching, dose-response."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from activations.hooks import any_hooks
from activations.sites import neuron_sites
from interp.causal import (
    DoseResponseConfig,
    GenerationConfig,
    Hooked,
    PatchingConfig,
    QuestionSet,
    Stacked,
    dose_response,
    emoji_suite,
    generate_cross_patched,
    generate_replies,
    measure,
    measure_stacked,
    patching_experiment,
    teacher_forced_batch,
)
from interp.causal.inputs import scored_forward
from interp.causal.results import interval
from interp.causal.suite import ablation_reference
from interp.interventions import NeuronSet, ablate, ablate_stacked, layer_widths, patch, record_neurons, scale

QUESTIONS = QuestionSet(("q1", "q2"), ("What do you think about jazz?", "How was the beach?"),
                        ("I love it, great fun", "Sunny and warm"), "inline")
NEUTRAL = ["The train leaves at nine in the morning.", "Water boils at one hundred degrees."]


def _suite(tokenizer, max_new_tokens: int = 4):
    return emoji_suite(tokenizer, QUESTIONS, NEUTRAL, batch_size=2,
                       generation=GenerationConfig(max_new_tokens=max_new_tokens, batch_size=2))


@pytest.fixture(scope="module")
def planted(tiny_llama):
    """A "merged" model that differs from base only in the neurons' inputs (gate/up projections):
    patching every neuron from merged into base must then reproduce merged exactly."""
    base = tiny_llama.model
    merged = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in merged.named_parameters():
            if "gate_proj" in name or "up_proj" in name:
                param.add_(torch.randn(param.shape, generator=generator) * param.std())
    return base, merged


def _all_neurons(model) -> NeuronSet:
    return NeuronSet.from_pairs([(layer, i) for layer, width in layer_widths(model).items() for i in range(width)])


def test_teacher_forced_batch_scores_the_continuation() -> None:
    from activations.embedded import embedded_tokenizer

    tokenizer = embedded_tokenizer()
    batch = teacher_forced_batch(tokenizer, ["Hi", "A longer prompt here"], ["there you go", ""], template="raw")
    head = len(tokenizer("Hi").input_ids)
    tail = len(tokenizer("there you go", add_special_tokens=False).input_ids)
    assert batch.score_mask[0].nonzero().flatten().tolist() == list(range(head - 1, head + tail - 1))
    last = int(batch.attention_mask[1].sum()) - 1
    assert batch.score_mask[1].nonzero().flatten().tolist() == [last]  # no continuation: the first reply token
    assert not (batch.score_mask & ~batch.attention_mask.bool()).any()


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_cross_patched_generation_with_itself_equals_generate(which, request) -> None:
    loaded = request.getfixturevalue(which)
    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = ["Tell me a story about", "Hi"]  # different lengths: left padding is exercised
    config = GenerationConfig(max_new_tokens=6, batch_size=2)
    neurons = NeuronSet.from_pairs([(0, 1), (1, 2), (2, 3)])
    assert generate_cross_patched(model, model, neurons, tokenizer, prompts, config) == \
        generate_replies(model, tokenizer, prompts, config)


def test_cross_patched_generation_agrees_with_forward_patch(planted, tiny_llama) -> None:
    base, merged = planted
    tokenizer = tiny_llama.tokenizer
    neurons = NeuronSet.from_pairs([(layer, i) for layer in range(3) for i in range(0, 128, 2)])
    prompt = "Tell me a story about"
    replies = generate_cross_patched(base, merged, neurons, tokenizer, [prompt], GenerationConfig(max_new_tokens=6))
    ids = tokenizer(prompt + replies[0], return_tensors="pt", add_special_tokens=False).input_ids
    n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    with torch.no_grad(), patch(base, neurons, record_neurons(merged, ids)):
        teacher = base(ids).logits[0, n_prompt - 1 : -1].argmax(-1)
    # re-tokenising the decoded text can merge tokens differently; compare the decoded strings
    assert tokenizer.decode(teacher) == replies[0]
    assert not any_hooks(neuron_sites(base))


def test_patching_every_neuron_recovers_the_planted_difference(planted, tiny_llama) -> None:
    base, merged = planted
    suite = _suite(tiny_llama.tokenizer)
    everything = _all_neurons(base)
    ranked = list(everything)
    result = patching_experiment(base, merged, tiny_llama.tokenizer, ranked, suite,
                                 PatchingConfig(k_grid=(len(ranked),)), names=("base", "merged"))
    point = result.points[0]
    assert point.k == len(ranked)
    assert point.sufficiency["emoji_mass"] == pytest.approx(result.merged["emoji_mass"], rel=1e-5)
    assert point.necessity["emoji_mass"] == pytest.approx(result.base["emoji_mass"], rel=1e-5)
    assert point.sufficiency_recovered["emoji_mass"] == pytest.approx(1.0, abs=1e-3)
    assert point.necessity_recovered["emoji_mass"] == pytest.approx(0.0, abs=1e-3)
    texts = {(r["condition"], r["id"]): r["text"] for r in result.generations}
    assert all(texts[("sufficiency", q)] == texts[("merged", q)] for q in QUESTIONS.ids)
    assert all(texts[("necessity", q)] == texts[("base", q)] for q in QUESTIONS.ids)
    assert "cross-patched" in result.to_dict()["generation_variant"]


def test_side_effects_zero_for_identity_and_positive_for_ablation(tiny_llama) -> None:
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    suite = _suite(tokenizer, max_new_tokens=0)
    neurons = NeuronSet.from_pairs([(1, i) for i in range(64)])
    identity = measure(model, tokenizer, suite, Hooked(lambda m: scale(m, neurons, 1.0))).metrics
    ablated = measure(model, tokenizer, suite, Hooked(lambda m: ablate(m, neurons))).metrics
    assert identity["kl_neutral"] == 0.0
    assert ablated["kl_neutral"] > 1e-6
    assert ablated["ppl_neutral"] != identity["ppl_neutral"] and ablated["ppl_neutral"] > 1


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
def test_dose_response_caps_k_matches_random_sets_and_saves(mode, tiny_llama, tmp_path) -> None:
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    suite = _suite(tokenizer, max_new_tokens=3 if mode == "zero" else 0)
    ranked = [(2, 5), (0, 3), (1, 9), (2, 1), (0, 4)]
    reference = ablation_reference(model, tokenizer, mode, NEUTRAL, batch_size=2)
    config = DoseResponseConfig(k_grid=(1, 3, 1000), mode=mode, n_random=2, seed=1)
    result = dose_response(model, tokenizer, ranked, suite, config, reference=reference, model_name="tiny")
    assert [p.k for p in result.points] == [1, 3, 5]
    assert result.baseline["kl_neutral"] == 0.0
    for point in result.points:
        assert point.per_layer == NeuronSet.from_pairs(ranked[: point.k]).counts()
        assert point.random["emoji_mass"].n == 2 and len(point.random_sets) == 2
        assert point.random["emoji_mass"].low <= point.random["emoji_mass"].mean <= point.random["emoji_mass"].high
    assert result.points[-1].flagged["kl_neutral"] > 0
    if suite.generates:
        # baseline + (flagged + 2 random) per k, one record per question
        assert len(result.generations) == (1 + 3 * 3) * len(QUESTIONS.ids)
    path = result.save(tmp_path)
    saved = json.loads(path.read_text())
    assert saved["config"]["mode"] == mode and len(saved["points"]) == 3
    assert (tmp_path / "generations.jsonl").exists()
    with pytest.raises(FileExistsError):
        result.save(tmp_path)
    assert not any_hooks(neuron_sites(model))


def test_interval_is_a_t_interval() -> None:
    iv = interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.3027
    assert iv.mean == 2.0 and iv.high - 2.0 == pytest.approx(4.302653 / 3**0.5, rel=1e-5)
    assert interval([5.0]).low == 5.0


def _stacked_sets(model) -> list[NeuronSet]:
    widths = layer_widths(model)
    return [NeuronSet.from_pairs([(2, 5), (0, 3)]), NeuronSet.from_pairs([(2, 7), (0, widths[0] - 1)]),
            NeuronSet.from_pairs([(1, i) for i in range(40)])]


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_stacked_ablation_edits_each_copy_like_its_own_ablate(which, request) -> None:
    loaded = request.getfixturevalue(which)
    model, sets = loaded.model, _stacked_sets(loaded.model)
    batch = teacher_forced_batch(loaded.tokenizer, QUESTIONS.questions, QUESTIONS.answers)
    ids, mask = batch.input_ids, batch.attention_mask
    with torch.no_grad():
        separate = []
        for neurons in sets:
            with ablate(model, neurons):
                separate.append(model(input_ids=ids, attention_mask=mask).logits)
        with ablate_stacked(model, sets):
            stacked = model(input_ids=ids.repeat(len(sets), 1), attention_mask=mask.repeat(len(sets), 1)).logits
    for copy_logits, own in zip(stacked.unflatten(0, (len(sets), len(ids))), separate):
        torch.testing.assert_close(copy_logits, own, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(separate[0], separate[2])  # the copies really differ
    assert not any_hooks(neuron_sites(model))


def test_stacked_ablation_refuses_a_batch_that_is_not_stacked(tiny_llama) -> None:
    sets = _stacked_sets(tiny_llama.model)
    ids = torch.ones(4, 5, dtype=torch.long)  # 4 rows cannot be 3 stacked copies
    with pytest.raises(ValueError, match="stacked copies"), ablate_stacked(tiny_llama.model, sets):
        tiny_llama.model(input_ids=ids)
    assert not any_hooks(neuron_sites(tiny_llama.model))


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_measure_stacked_agrees_with_measuring_each_set(mode, tiny_llama) -> None:
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    suite = _suite(tokenizer, max_new_tokens=5)
    sets = _stacked_sets(model)
    reference = ablation_reference(model, tokenizer, mode, NEUTRAL, batch_size=2)
    stacked = measure_stacked(model, tokenizer, suite,
                              Stacked(lambda m: ablate_stacked(m, sets, mode, reference), len(sets)))
    for neurons, together in zip(sets, stacked):
        alone = measure(model, tokenizer, suite, Hooked(lambda m, s=neurons: ablate(m, s, mode, reference)))
        assert together.texts == alone.texts
        assert together.metrics.keys() == alone.metrics.keys()
        for name, value in alone.metrics.items():
            # KL's reference runs unstacked: batched-matmul rounding leaves a ~1e-7 floor
            assert together.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_dose_response_stacked_equals_one_by_one(tiny_llama) -> None:
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    suite = _suite(tokenizer, max_new_tokens=3)
    ranked = [(2, 5), (0, 3), (1, 9), (2, 1), (0, 4)]
    results = [dose_response(model, tokenizer, ranked, suite,
                             DoseResponseConfig(k_grid=(1, 5), n_random=2, seed=4, stacked=stacked))
               for stacked in (True, False)]
    assert [r["text"] for r in results[0].generations] == [r["text"] for r in results[1].generations]
    for together, alone in zip(*(r.points for r in results)):
        assert together.flagged == pytest.approx(alone.flagged, rel=1e-4, abs=1e-6)
        for a, b in zip(together.random_sets, alone.random_sets):
            assert a == pytest.approx(b, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_scored_forward_cuts_logits_without_changing_metrics(which, request) -> None:
    loaded = request.getfixturevalue(which)
    batch = teacher_forced_batch(loaded.tokenizer, QUESTIONS.questions, QUESTIONS.answers)
    metric = emoji_suite(loaded.tokenizer, QUESTIONS, None).logit_metrics["emoji_mass"]
    with torch.no_grad():
        full = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logits, mask = scored_forward(loaded.model, batch)
    span = batch.scored_span()
    assert logits.shape[1] == span.stop - span.start < full.shape[1]
    torch.testing.assert_close(logits, full[:, span], rtol=1e-5, atol=1e-5)
    assert float(metric(logits, mask)) == pytest.approx(float(metric(full, batch.score_mask)), rel=1e-6)
