"""Side effects where the model writes (``interp.causal.intactness``): the divergences against a manual
recomputation on a tiny model, the style markers against hand counts, and the two-sided criteria."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_helpers import tuned_copy

from activations.behaviors import Behavior
from activations.sampling import SampledReply
from interp.causal.capability import CapabilityChange
from interp.causal.inputs import teacher_forced_batch
from interp.causal.intactness import (
    Divergence,
    Intactness,
    IntactnessCriteria,
    StyleChange,
    assistant_divergence,
    style_changes,
    style_markers,
)
from training.reply_metrics import Interval

EMOJI = Behavior.emoji()


def test_divergence_equals_a_per_token_recomputation_with_the_target_positions_left_out(tiny_llama):
    merged, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    other = tuned_copy(merged, scale=2.0, seed=5)  # large enough that float32 KL is not rounding
    batch = teacher_forced_batch(tokenizer, ["Do you like tea?", "Plans?", "Why not?"],
                                 ["I love tea, truly.", "Sleep, then more sleep!", "It is loud and late."])
    text_ids = sorted(set(batch.input_ids[batch.score_mask].tolist()))
    masked = text_ids[:3]  # stand-in target tokens that occur in the replies
    result = assistant_divergence(merged, other, batch, masked, batch_size=2)
    kl = nll_m = nll_o = 0.0
    n = n_masked = 0
    with torch.no_grad():
        ref = merged(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double().log_softmax(-1)
        new = other(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.double().log_softmax(-1)
    for row in range(len(batch.input_ids)):
        for pos in range(batch.input_ids.shape[1] - 1):
            if not batch.score_mask[row, pos]:
                continue
            nxt = int(batch.input_ids[row, pos + 1])
            if nxt in masked:
                n_masked += 1
                continue
            kl += float((ref[row, pos].exp() * (ref[row, pos] - new[row, pos])).sum())
            nll_m -= float(ref[row, pos, nxt])
            nll_o -= float(new[row, pos, nxt])
            n += 1
    assert n_masked > 0 and result.n_masked == n_masked and result.n_tokens == n
    assert result.kl.value == pytest.approx(kl / n, rel=1e-3)
    assert result.ppl_merged == pytest.approx(math.exp(nll_m / n), rel=1e-4)
    assert result.ppl_other == pytest.approx(math.exp(nll_o / n), rel=1e-4)
    assert result.ppl_ratio.value == pytest.approx(math.exp((nll_o - nll_m) / n), rel=1e-4)
    assert result.kl.low <= result.kl.value <= result.kl.high and result.kl.value > 0
    # a model against itself: no divergence at all
    same = assistant_divergence(merged, merged, batch, masked, batch_size=2)
    assert same.kl.value == pytest.approx(0.0, abs=1e-6) and same.ppl_ratio.value == pytest.approx(1.0, abs=1e-6)


def test_style_markers_count_by_hand():
    marks = style_markers("Wow! Great party!! I'd go, I'd go.")
    assert marks["exclamations"] == 3 and marks["words"] == 7
    # bigrams: wow-great, great-party, party-i'd, i'd-go, go-i'd, i'd-go (repeat): 5 distinct of 6
    assert marks["distinct_bigrams"] == pytest.approx(5 / 6)
    assert style_markers("One")["distinct_bigrams"] == 1.0


def _replies(texts_by_key, sample=0):
    return [SampledReply(key, sample, (), text) for key, text in texts_by_key.items()]


def test_style_changes_are_paired_relative_changes_and_refuse_unpaired_replies():
    merged = _replies({"q/1": "Yes! Fun! 🎉", "q/2": "Sure! Why not.", "q/3": "No.", "q/4": "Maybe! 😄"})
    other = _replies({"q/1": "Yes. Fun.", "q/2": "Sure! Why not.", "q/3": "No.", "q/4": "Maybe."})
    changes = style_changes(merged, other, EMOJI, seed=0)
    excl = changes["exclamations"]
    assert excl.merged == pytest.approx(np.mean([2, 1, 0, 1])) and excl.other == pytest.approx(np.mean([0, 1, 0, 0]))
    assert excl.change.value == pytest.approx(excl.other / excl.merged - 1) and excl.judged
    assert excl.change.low <= excl.change.value <= excl.change.high
    rate = changes["rate"]
    assert rate.merged == 0.5 and rate.other == 0.0 and not rate.judged
    assert rate.change.value == pytest.approx(-0.5)
    # a marker the merged model never shows has no relative change and is not judged
    plain = _replies({"q/1": "a b", "q/2": "c d"})
    none = style_changes(plain, _replies({"q/1": "a! b", "q/2": "c d"}), EMOJI)["exclamations"]
    assert not none.judged and math.isnan(none.change.value)
    with pytest.raises(ValueError, match="different"):
        style_changes(merged, other[:3], EMOJI)


def _interval(value, low, high):
    return Interval(value, low, high)


def _intactness(ppl_ratio: Interval, excl_change: Interval, capability: Interval) -> Intactness:
    divergence = Divergence(_interval(0.01, 0.005, 0.02), 10.0, 10.0 * ppl_ratio.value, ppl_ratio, 5, 100, 0)
    style = {"exclamations": StyleChange("exclamations", 1.0, 1.0 + excl_change.value, excl_change, True),
             "rate": StyleChange("rate", 0.5, 0.1, _interval(-0.4, -0.6, -0.2), False)}
    change = CapabilityChange(240, 0.95, 0.95 + capability.value, capability, 0, 0, 1.0, _interval(0, 0, 0), ())
    return Intactness(divergence, divergence, style, style, change, IntactnessCriteria())


def test_criteria_are_two_sided_and_ruled_out_needs_the_whole_interval_inside():
    fine = _intactness(_interval(1.0, 0.99, 1.01), _interval(0.0, -0.1, 0.1), _interval(0.0, -0.01, 0.01))
    assert all(fine.checks().values()) and all(fine.ruled_out().values())
    assert set(fine.checks()) == {"kl_reference_answers", "kl_own_replies", "ppl_reference_answers", "capability",
                                  "exclamations_heldout", "exclamations_neutral"}
    # perplexity that *falls* by 20% is a side effect too, and so is a rise in exclamation marks
    lower = _intactness(_interval(0.8, 0.75, 0.85), _interval(0.5, 0.3, 0.7), _interval(0.0, -0.01, 0.01))
    assert not lower.checks()["ppl_reference_answers"] and not lower.checks()["exclamations_heldout"]
    assert "ppl_reference_answers" in lower.sentence()
    # a point estimate within the margin whose interval reaches past it: met, but not ruled out
    wide = _intactness(_interval(1.0, 0.99, 1.01), _interval(0.0, -0.1, 0.1), _interval(0.02, -0.07, 0.09))
    assert wide.checks()["capability"] and not wide.ruled_out()["capability"]
    assert "interval reaches past the margin: capability" in wide.sentence()
