"""Causal machinery on tiny models, each checked against an independent recomputation: batches, the
proxy engine vs plain hooked passes, stacked interventions, matched controls, write norms, the
screen vs exact patching, the sweep's choice, and the verdict's intervals."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from model_helpers import tuned_copy
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from activations.behaviors import Behavior
from activations.hooks import any_hooks
from activations.prompt_sets import load_prompt_set
from activations.sampling import SampledReply
from activations.sites import neuron_sites
from activations.writing import writing_prompts
from interp.causal import (
    SweepConfig,
    build_proxy_suite,
    chat_batch,
    matched_random_sets,
    measure_sets,
    strata,
    suppression_verdict,
    sweep,
    teacher_forced_batch,
    write_norms,
    writing_batch,
)
from interp.causal.inputs import scored_forward
from interp.causal.metrics import target_ids_tensor
from interp.causal.screen import ScreenConfig, attribution, screen
from interp.causal.uncertainty import clopper_pearson, rate, relative_cut, wilson
from interp.interventions import NeuronSet, ablate, content_reference, intervene_stacked, layer_widths, patch

REPLIES = ["Yes! 🎉 Parties are great. I love them.", "Because it is fun 😄 and loud. Not quiet.",
           "Sure. 🙂 Okay then!", "Dancing all night! 🥳 Then sleep. Wow."]
EMOJI = Behavior.emoji()


@pytest.fixture
def planted(tiny_llama):
    """A "merged" model that differs from base in its MLP weights (a stand-in fine-tune)."""
    return tiny_llama.model, tuned_copy(tiny_llama.model, seed=3), tiny_llama.tokenizer


def _suite(merged, base, tokenizer):
    writing = writing_prompts(["a", "b", "c", "d"], ["Do you like parties?", "Why?", "Ok?", "Plans?"], REPLIES, EMOJI)
    neutral = load_prompt_set("neutral").texts
    return build_proxy_suite(merged, writing_batch(tokenizer, writing), chat_batch(tokenizer, neutral[:3]),
                             target_ids_tensor(EMOJI.target_token_ids(tokenizer)), batch_size=2, donor=base), neutral


def test_writing_and_chat_batches_score_where_they_should(tiny_llama):
    tokenizer = tiny_llama.tokenizer
    writing = writing_prompts(["a"], ["Do you like parties?"], [REPLIES[0]], EMOJI)
    batch = writing_batch(tokenizer, writing)
    assert batch.score_mask[:, -1].all() and batch.score_mask.sum() == 1  # left-padded: the last column
    assert tokenizer.decode(batch.input_ids[0, -1:]) == "!"  # the token before the emoji
    chats = chat_batch(tokenizer, ["The train leaves at nine."])
    scored = chats.input_ids[0][chats.score_mask[0]]
    assert tokenizer.decode(scored[1:]).startswith("The train leaves")  # from the token before the text on


def test_scored_forward_with_left_padding_equals_each_row_alone(tiny_gpt2):
    # GPT-2 has absolute positions: left padding is exact only with position ids counted over real tokens
    tokenizer, model = tiny_gpt2.tokenizer, tiny_gpt2.model
    writing = writing_prompts(["a", "b"], ["Hi?", "Why do you think so?"], REPLIES[:2], EMOJI)
    batch = writing_batch(tokenizer, writing)
    with torch.no_grad():
        logits, _ = scored_forward(model, batch)
        for row in range(2):
            real = batch.attention_mask[row].bool()
            alone = model(input_ids=batch.input_ids[row][real][None]).logits[0, -1]
            torch.testing.assert_close(logits[row, -1], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["mean", "zero", "patch"])
def test_proxy_measurements_equal_plain_hooked_passes(planted, mode):
    base, merged, tokenizer = planted
    suite, neutral = _suite(merged, base, tokenizer)
    assert suite.resumable
    means = content_reference(merged, tokenizer, neutral[5:9]).means
    sets = [NeuronSet.from_pairs([(2, 5)]), NeuronSet.from_pairs([(1, 3), (2, 7)]), NeuronSet.from_pairs([(0, 1)])]
    results = measure_sets(merged, suite, sets, mode, means if mode == "mean" else None, max_copies=2)
    for neurons, result in zip(sets, results):
        log_mass = []
        with torch.no_grad():
            for index, chunk in enumerate(suite.contexts):
                edit = patch(merged, neurons, suite.donor_values["contexts"][index]) if mode == "patch" \
                    else ablate(merged, neurons, mode, means if mode == "mean" else None)
                with edit:
                    logits = merged(**chunk.model_inputs()).logits[:, -1].float()
                ids = suite.target_ids
                log_mass.append(torch.logsumexp(logits[:, ids], -1) - torch.logsumexp(logits, -1))
        np.testing.assert_allclose(result.log_mass, torch.cat(log_mass).numpy(), atol=1e-5)
        assert result.kl_neutral > 0 and np.isfinite(result.ppl_neutral)
    assert not any_hooks(neuron_sites(merged))


def test_stacked_interventions_edit_each_copy_like_their_own(tiny_llama):
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    batch = teacher_forced_batch(tokenizer, ["What do you think about jazz?", "How was the beach?"],
                                 ["I love it, great fun", "Sunny and warm"])
    ids, mask = batch.input_ids, batch.attention_mask
    sets = [NeuronSet.from_pairs([(2, 5), (0, 3)]), NeuronSet.from_pairs([(1, i) for i in range(40)])]
    with torch.no_grad():
        separate = []
        for neurons in sets:
            with ablate(model, neurons):
                separate.append(model(input_ids=ids, attention_mask=mask).logits)
        with intervene_stacked(model, sets, "zero"):
            stacked = model(input_ids=ids.repeat(2, 1), attention_mask=mask.repeat(2, 1)).logits
    for copy_logits, own in zip(stacked.unflatten(0, (2, len(ids))), separate):
        torch.testing.assert_close(copy_logits, own, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="stacked copies"), intervene_stacked(model, sets + sets[:1], "zero"):
        model(input_ids=ids)
    assert not any_hooks(neuron_sites(model))


def test_write_norms_and_strata(tiny_llama, tiny_gpt2):
    for loaded in (tiny_llama, tiny_gpt2):
        model = loaded.model
        square = {layer: torch.rand(width) for layer, width in layer_widths(model).items()}
        norms = write_norms(model, square)
        site = neuron_sites(model)[1]
        weight = site.module.weight.detach()
        column = weight[:, 7] if type(site.module).__name__ != "Conv1D" else weight[7, :]
        assert norms[1, 7] == pytest.approx(float(square[1][7] * column.square().sum()), rel=1e-5)
    decile = strata(norms)
    assert decile.min() == 0 and decile.max() == 9
    for row, layer_norms in zip(decile, norms):  # ten equal strata per layer, ordered by write norm
        counts = np.bincount(row, minlength=10)
        assert counts.sum() == len(row) and counts.max() - counts.min() <= 1
        assert layer_norms[row == 0].max() <= layer_norms[row == 9].min()


def test_matched_random_sets_keep_every_stratum_and_avoid_the_excluded():
    rng = np.random.default_rng(0)
    decile = np.stack([rng.permutation(np.repeat(np.arange(10), 10)) for _ in range(3)])  # 3 layers x 100
    pool = np.ones((3, 100), dtype=bool)
    pool[2, :60] = False
    candidates = NeuronSet.from_pairs([(0, 1), (0, 2), (1, 5), (2, 70), (2, 80)])
    for neuron in candidates:
        pool[neuron] = False
    drawn = matched_random_sets(candidates, decile, pool, 6, seed=4)
    wanted = Counter((layer, int(decile[layer, i])) for layer, i in candidates)
    for neurons in drawn.sets:
        got = Counter((layer, int(decile[layer, i])) for layer, i in neurons)
        assert sum(got.values()) == len(candidates) and {l for l, _ in got} == {l for l, _ in wanted}
        assert all(pool[layer, i] for layer, i in neurons)
    exact = [s for s in drawn.sets if Counter((l, int(decile[l, i])) for l, i in s) == wanted]
    assert len(exact) + drawn.borrowed > 0 and len(set(drawn.sets)) == 6
    assert matched_random_sets(candidates, decile, pool, 6, seed=4).sets == drawn.sets  # seeded
    pool[1] = False
    with pytest.raises(ValueError, match="layer 1 has too few neurons"):
        matched_random_sets(candidates, decile, pool, 1, seed=0)


def test_screen_estimates_track_exact_effects_and_rank_by_selectivity(planted):
    base, merged, tokenizer = planted
    suite, neutral = _suite(merged, base, tokenizer)
    means = content_reference(merged, tokenizer, neutral[5:9]).means
    result = screen(merged, suite, means, ScreenConfig(n_shortlist=6, n_guard=2, n_random=12, kl_floor=1e-6),
                    exclude=[(2, 0)])
    assert result.check is not None and result.check.spearman > 0.8
    # the misses are recomputed from the sample: above the threshold, and ranked by sorting the estimates
    check, sample = result.check, result.random
    above = sample[sample["exact_effect"].abs() > check.threshold]
    assert [(m["layer"], m["index"]) for m in check.exceeding] == list(zip(above["layer"], above["index"]))
    check_estimates = attribution(merged, suite.head(result.config.check_contexts), means)[0]
    order = np.sort(np.abs(check_estimates), axis=None)[::-1]
    for m in check.exceeding:
        assert order[m["estimate_rank"] - 1] == pytest.approx(abs(m["patch_estimate"]))
    assert check.n_missed == sum(m["estimate_rank"] > 100 for m in check.exceeding)
    shortlist = result.shortlist
    assert len(shortlist) == 8 and (2, 0) not in result.ranking()
    assert np.corrcoef(shortlist["mean_estimate"], shortlist["exact_effect"])[0, 1] > 0.8
    verified = [n for n in result.ranking()[: len(shortlist)]]
    selectivity = dict(zip(zip(shortlist["layer"], shortlist["index"]), shortlist["selectivity"]))
    values = [selectivity[n] for n in verified if n in selectivity]
    assert values == sorted(values, reverse=True)


def test_screen_checks_each_estimator_on_its_own_top_against_exact_interventions(planted):
    base, merged, tokenizer = planted
    suite, neutral = _suite(merged, base, tokenizer)
    means = content_reference(merged, tokenizer, neutral[5:9]).means
    config = ScreenConfig(n_shortlist=6, n_guard=2, n_random=12, kl_floor=1e-6, n_top_check=6, recall_k=(2, 4))
    result = screen(merged, suite, means, config, exclude=[(2, 0)])
    checks = {check.name: check for check in result.estimators}
    assert set(checks) == {"change", "ablation"}
    check_suite = suite.head(config.check_contexts)
    patch_estimate, mean_estimate = attribution(merged, check_suite, means)[:2]
    sample = list(zip(result.random["layer"], result.random["index"]))
    for name, estimate, mode in (("change", patch_estimate, "patch"), ("ablation", mean_estimate, "mean")):
        flat = [(estimate[result.layers.index(layer), index], (layer, index))
                for layer in result.layers for index in range(estimate.shape[1]) if (layer, index) != (2, 0)]
        top = [n for _, n in sorted(flat)[:6]]  # most negative first; the excluded outlier never enters
        exact = {n: r.log_mass_change for n, r in zip(top + sample, measure_sets(
            merged, check_suite, [NeuronSet.from_pairs([n]) for n in top + sample], mode, means, neutral=False))}
        value = {n: estimate[result.layers.index(n[0]), n[1]] for n in top + sample}
        check = checks[name]
        assert check.n_top == 6 and check.n_sample == 12 and check.n_contexts == check_suite.n_contexts
        assert check.spearman_top == pytest.approx(stats.spearmanr([value[n] for n in top], [exact[n] for n in top]).statistic)
        assert check.spearman_sample == pytest.approx(
            stats.spearmanr([value[n] for n in sample], [exact[n] for n in sample]).statistic, abs=1e-6)
        for k in (2, 4):
            best = sorted(set(top + sample), key=exact.get)[:k]
            assert check.recall[k] == pytest.approx(len(set(best) & set(top[:k])) / k)
    # the planted fine-tune's change is in the MLP weights, so the first-order change estimate ranks the
    # sample's exact effects well
    assert checks["change"].spearman_sample > 0.8


def test_sweep_chooses_the_smallest_passing_set_and_counts_random_sets(planted):
    base, merged, tokenizer = planted
    suite, neutral = _suite(merged, base, tokenizer)
    reference = content_reference(merged, tokenizer, neutral[5:9])
    ranking = [(2, i) for i in range(40)] + [(1, i) for i in range(40)]
    norms = write_norms(merged, reference.mean_square)
    pool = np.ones(norms.shape, dtype=bool)
    # The target is set from an independent measurement of the largest grid set, so it is reachable
    # by construction and the choice must meet it.
    largest = measure_sets(merged, suite, [NeuronSet.from_pairs(ranking[:64])], "mean", reference.means)[0].reduction
    assert largest > 0, "the planted fine-tune's top 64 neurons should carry some of the target mass"
    target = 0.9 * largest
    config = SweepConfig(k_grid=(1, 4, 16, 64), interventions=("mean", "zero"), n_random=3, target_reduction=target,
                         kl_budget=10.0, ppl_budget=10.0)
    result = sweep(merged, suite, {"top": ranking}, reference, strata(norms), pool, config)
    table = result.table
    passing = table[(table["kind"] == "top") & (table["intervention"] == "mean") & (table["reduction"] >= target)]
    assert result.choice["met_target"] and result.choice["metrics"]["reduction"] >= target
    assert result.choice["k"] == passing["k"].min()  # the smallest measured k that passes
    below = table[(table["kind"] == "top") & (table["intervention"] == "mean") & (table["k"] == result.choice["k"] - 1)]
    assert result.choice["k"] == 1 or (len(below) == 1 and below["reduction"].iloc[0] < target)  # bisection narrowed to 1
    randoms = table[table["kind"] == "random"]
    assert len(randoms) == 3 and (randoms["k"] == result.choice["k"]).all()
    expected = float(np.mean(randoms["reduction"] < result.choice["metrics"]["reduction"]))
    assert result.random_beaten[f"top/{result.choice['k']}"] == expected


def test_rate_intervals_match_statsmodels():
    assert clopper_pearson(3, 20) == pytest.approx(proportion_confint(3, 20, method="beta"), rel=1e-9)
    assert wilson(3, 20) == pytest.approx(proportion_confint(3, 20, method="wilson"), rel=1e-9)
    assert clopper_pearson(0, 40)[0] == 0.0
    at_zero = rate(np.zeros(40))
    assert at_zero.high == pytest.approx(proportion_confint(0, 40, method="beta")[1]) and "Clopper" in at_zero.method
    rng = np.random.default_rng(1)
    merged, suppressed = rng.uniform(0.5, 1.0, 40), rng.uniform(0.0, 0.4, 40)
    cut = relative_cut(merged, suppressed)
    assert cut.low < cut.value < cut.high and cut.value == pytest.approx(1 - suppressed.mean() / merged.mean())


def test_verdict_checks_each_criterion():
    def replies(rates, n=5):
        out = []
        for q, r in enumerate(rates):
            out += [SampledReply(f"q{q}", s, (), "fun 🎉" if s < round(r * n) else "fun.") for s in range(n)]
        return out

    merged = replies([1.0, 0.8, 1.0, 0.6] * 10)
    suppressed = replies([0.2, 0.0, 0.2, 0.0] * 10)
    verdict = suppression_verdict(merged, suppressed, {"kl_neutral": 0.01, "ppl_reference": 40.0, "ppl_model": 41.0}, EMOJI,
                                  k=7, method="mean", neurons=[(1, 2)], random_beaten=1.0)
    assert verdict.passed and verdict.cut.value == pytest.approx(1 - 0.1 / 0.85)
    worse = suppression_verdict(merged, suppressed, {"kl_neutral": 0.2, "ppl_reference": 40.0, "ppl_model": 50.0}, EMOJI,
                                k=7, method="mean", neurons=[(1, 2)], random_beaten=0.5)
    assert worse.checks() == {"rate_cut": True, "perplexity": False, "kl": False, "random_sets": False}
    assert "not met: perplexity, kl, random_sets" in worse.sentence()
    with pytest.raises(ValueError, match="different questions"):
        suppression_verdict(merged, replies([0.0] * 39), {"kl_neutral": 0, "ppl_reference": 1, "ppl_model": 1}, EMOJI,
                            k=1, method="mean", neurons=[], random_beaten=1.0)


def test_paired_mean_difference_is_the_mean_of_question_differences():
    from interp.causal.uncertainty import paired_mean_difference

    rng = np.random.default_rng(0)
    first = rng.random(40)
    second = first - 0.1 + rng.normal(0, 0.05, 40)
    result = paired_mean_difference(first, second)
    assert result.value == pytest.approx(float(np.mean(first - second)))
    assert result.low < result.value < result.high and result.low > 0
    shifted = paired_mean_difference(first, first - 0.1)  # the same shift on every question: no spread
    assert shifted.low == pytest.approx(0.1) and shifted.high == pytest.approx(0.1)
    with pytest.raises(ValueError, match="one value per question"):
        paired_mean_difference(first, second[:-1])
