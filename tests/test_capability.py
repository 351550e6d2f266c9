"""The capability probe: batched log-likelihoods vs a plain forward, the paired comparison vs
statsmodels' exact McNemar test on a planted table, the loader's checks, the shipped items, and the
real model's accuracy well above chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from statsmodels.stats.contingency_tables import mcnemar

from interp.causal.capability import (CapabilityItem, CapabilityScores, compare_capability, load_capability_items,
                                      score_capability)
from training.reply_metrics import Interval

# prompts of different lengths and choices of different token counts, so batches mix paddings
ITEMS = (
    CapabilityItem("t-1", "facts", "The capital of France is", (" Paris", " Berlin", " Madrid", " Rome"), 0),
    CapabilityItem("t-2", "meaning", "The opposite of hot is", (" loud", " cold"), 1),
    CapabilityItem("t-3", "arithmetic", "2 + 2 = 4, 3 + 4 =", (" 1", " 12", " 7"), 2),
    CapabilityItem("t-4", "grammar", "Yesterday the children in the big old house", (" were", " was"), 0),
    CapabilityItem("t-5", "sequences", "Monday,", (" Tuesday and then Wednesday", " May", " Friday"), 0),
)


def _plain_logprob(model, tokenizer, prompt: str, choice: str) -> float:
    """Sum of log P(choice tokens | prompt) from one unpadded forward of one sequence."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    choice_ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0].double().log_softmax(-1)
    return sum(float(logp[len(prompt_ids) + k - 1, token]) for k, token in enumerate(choice_ids))


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_batched_loglikelihoods_match_a_plain_forward(fixture, request) -> None:
    loaded = request.getfixturevalue(fixture)
    model, tokenizer = loaded.model, loaded.tokenizer
    assert tokenizer("a")["input_ids"][:1] != [tokenizer.bos_token_id]  # no BOS, as the reference assumes
    training = model.training
    scores = score_capability(model, tokenizer, ITEMS, batch_size=3)
    assert model.training == training
    for item, sums, per_token, answer_margin in zip(ITEMS, scores.choice_logprobs, scores.choice_logprobs_per_token,
                                                    scores.margins):
        expected = [_plain_logprob(model, tokenizer, item.prompt, choice) for choice in item.choices]
        np.testing.assert_allclose(sums, expected, atol=1e-4)
        lengths = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in item.choices]
        np.testing.assert_allclose(per_token, np.array(expected) / lengths, atol=1e-4)
        wrong = max(e for k, e in enumerate(expected) if k != item.answer)
        assert answer_margin == pytest.approx(expected[item.answer] - wrong, abs=1e-4)
    assert scores.predicted == tuple(int(np.argmax(s)) for s in scores.choice_logprobs)
    assert scores.chance == pytest.approx(np.mean([1 / 4, 1 / 2, 1 / 3, 1 / 2, 1 / 3]))


def _scores(correct: np.ndarray, margins: np.ndarray) -> CapabilityScores:
    n = len(correct)
    return CapabilityScores(
        item_ids=tuple(f"p-{k}" for k in range(n)), categories=("planted",) * n, answers=(0,) * n,
        choice_logprobs=((0.0, 0.0),) * n, choice_logprobs_per_token=((0.0, 0.0),) * n,
        predicted=tuple(0 if c else 1 for c in correct), correct=tuple(bool(c) for c in correct),
        margins=tuple(float(m) for m in margins),
        accuracy=Interval(float(np.mean(correct)), 0.0, 1.0, "planted", n), chance=0.5)


def _planted_pair(both: int, right_to_wrong: int, wrong_to_right: int, neither: int, margin_shift: float):
    reference = np.array([1] * both + [1] * right_to_wrong + [0] * wrong_to_right + [0] * neither, bool)
    other = np.array([1] * both + [0] * right_to_wrong + [1] * wrong_to_right + [0] * neither, bool)
    order = np.random.default_rng(1).permutation(len(reference))
    noise = np.random.default_rng(2).normal(0, 1, len(reference))
    ref_margins = np.random.default_rng(3).normal(2, 1, len(reference))
    other_margins = ref_margins + margin_shift + (noise - noise.mean())  # the mean shift is exactly margin_shift
    return _scores(reference[order], ref_margins[order]), _scores(other[order], other_margins[order])


@pytest.mark.parametrize("table", [(140, 30, 10, 20), (150, 12, 12, 26), (100, 3, 0, 7), (90, 1, 6, 3)])
def test_compare_capability_matches_statsmodels_mcnemar(table) -> None:
    both, right_to_wrong, wrong_to_right, neither = table
    reference, other = _planted_pair(*table, margin_shift=-0.5)
    change = compare_capability(reference, other, n_boot=2000, seed=0)
    expected = mcnemar([[both, right_to_wrong], [wrong_to_right, neither]], exact=True).pvalue
    assert change.mcnemar_p == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert (change.right_to_wrong, change.wrong_to_right) == (right_to_wrong, wrong_to_right)
    planted = (wrong_to_right - right_to_wrong) / sum(table)
    assert change.accuracy_difference.value == pytest.approx(planted)
    assert change.accuracy_difference.low <= planted <= change.accuracy_difference.high
    assert change.margin_change.low <= -0.5 <= change.margin_change.high
    assert change.margin_change.high < 0  # a shift of half a nat over ~200 items is resolved
    assert len(change.flipped_items) == right_to_wrong + wrong_to_right


def test_compare_capability_resolves_a_planted_drop_and_not_a_null() -> None:
    change = compare_capability(*_planted_pair(140, 30, 10, 20, margin_shift=0.0))
    assert change.accuracy_difference.high < 0 and change.mcnemar_p < 0.01
    same = compare_capability(*_planted_pair(150, 0, 0, 50, margin_shift=0.0))
    assert same.mcnemar_p == 1.0 and same.accuracy_difference.value == 0.0


def test_compare_capability_refuses_different_items() -> None:
    reference, other = _planted_pair(10, 1, 1, 2, margin_shift=0.0)
    with pytest.raises(ValueError, match="different items"):
        compare_capability(reference, _scores(np.array(other.correct[:-1]), np.array(other.margins[:-1])))


def _write(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


GOOD = {"id": "ok-1", "category": "facts", "prompt": "The opposite of hot is", "choices": [" cold", " tall"], "answer": 0}


@pytest.mark.parametrize(("bad", "message"), [
    ({**GOOD, "id": "bad-7", "answer": 2}, r"capability\.jsonl:2: item 'bad-7': answer 2 is not an index.*use 0\.\.1"),
    ({**GOOD, "id": "bad-7", "choices": [" cold"]}, r":2: item 'bad-7' has 1 choice\(s\); give at least 2"),
    ({**GOOD, "id": "bad-7", "answer": "0"}, r":2: answer must be an integer"),
    ({**GOOD}, r":2: id 'ok-1' already used on line 1"),
    ({key: v for key, v in GOOD.items() if key != "choices"}, r":2: missing field\(s\) \['choices'\]"),
])
def test_loader_rejects_bad_items_naming_line_and_item(tmp_path, bad, message) -> None:
    path = tmp_path / "capability.jsonl"
    _write(path, [GOOD, bad])
    with pytest.raises(ValueError, match=message):
        load_capability_items(path)


def test_loader_reads_a_users_file(tmp_path) -> None:
    path = tmp_path / "mine.jsonl"
    _write(path, [GOOD, {**GOOD, "id": "ok-2", "answer": 1}])
    items = load_capability_items(path)
    assert [i.id for i in items] == ["ok-1", "ok-2"] and items[1].choices == (" cold", " tall")


def test_builtin_probe_loads_balanced() -> None:
    items = load_capability_items()
    assert len(items) >= 200
    assert len({i.id for i in items}) == len(items)
    assert len({i.answer for i in items}) > 1
    for n in {len(i.choices) for i in items}:  # within each choice count, every position is used
        positions = [i.answer for i in items if len(i.choices) == n]
        counts = np.bincount(positions, minlength=n)
        assert counts.min() >= counts.max() - 1, (n, counts)
    categories = {i.category for i in items}
    assert len(categories) >= 6
    assert all(i.choices and all(c.startswith(" ") for c in i.choices) for i in items)
    assert not any(i.prompt.endswith(" ") for i in items)


@pytest.mark.integration
def test_real_model_is_well_above_chance(smollm2) -> None:
    scores = score_capability(smollm2.model, smollm2.tokenizer, load_capability_items(), batch_size=32)
    assert scores.accuracy.low > scores.chance + 0.15, scores.to_dict()["by_category"]
