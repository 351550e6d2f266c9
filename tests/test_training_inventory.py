"""The trait inventory: loading, the two response formats against a manual recomputation, the
keying-group interval against scipy's Welch test, letter bias cancelling, and the persona validity
check on the real default model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from training import inventory
from training.inventory import (
    InventoryConfig,
    InventoryItem,
    keyed_mean,
    load_inventory,
    paired_difference,
    score_inventory,
)
from training.data import TRAITS

OUTGOING = "You are an extremely outgoing, talkative and sociable person who loves parties and being around people."
RESERVED = "You are an extremely reserved, quiet and solitary person who avoids parties and prefers to be alone."


def test_the_project_inventory_is_balanced() -> None:
    items = load_inventory()
    for trait in TRAITS:
        keys = [i.key for i in items if i.trait == trait]
        assert len(keys) >= 10 and keys.count(1) == keys.count(-1)
    assert len({i.text for i in items}) == len(items)


def test_user_inventories_load_or_say_what_is_wrong(tmp_path) -> None:
    good = tmp_path / "mine.csv"
    good.write_bytes("\ufefftext,trait,key\nlike dogs,Agreeableness,+\ndislike cats,agreeableness,-1\n".encode())
    assert load_inventory(good) == (InventoryItem("like dogs", "agreeableness", 1),
                                    InventoryItem("dislike cats", "agreeableness", -1))
    (tmp_path / "bad.csv").write_text("text,trait,key\nlike dogs,kindness,1\n")
    with pytest.raises(ValueError, match=r"lines \[2\] need a text, a trait"):
        load_inventory(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("statement,trait\nx,openness\n")
    with pytest.raises(ValueError, match="lacks columns"):
        load_inventory(tmp_path / "cols.csv")
    with pytest.raises(ValueError, match="response format"):
        InventoryConfig(response="essay")


def test_keyed_mean_interval_is_half_of_welchs_difference_interval() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.8, 0.3, 6), rng.normal(-0.2, 0.6, 7)
    values, keys = np.concatenate([pos, neg]), np.array([1] * 6 + [-1] * 7)
    mean, low, high = keyed_mean(values, keys, 0.95)
    welch = stats.ttest_ind(pos, neg, equal_var=False).confidence_interval(0.95)
    assert mean == pytest.approx((pos.mean() - neg.mean()) / 2)
    assert (low, high) == pytest.approx((welch.low / 2, welch.high / 2))
    # a shift of every item (acquiescence) moves neither the score nor the interval
    assert keyed_mean(values + 5.0, keys, 0.95) == pytest.approx((mean, low, high))


def _manual_next(model, tokenizer, text: str, words) -> np.ndarray:
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        probs = model(ids).logits[0, -1].softmax(-1)
    return np.array([float(probs[tokenizer.encode(w, add_special_tokens=False)[0]]) for w in words])


@pytest.mark.parametrize("response", ["agree", "likert"])
def test_scores_equal_a_manual_recomputation(tiny_llama, response) -> None:
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    items = (InventoryItem("enjoy parties", "extraversion", 1), InventoryItem("stay home", "extraversion", -1),
             InventoryItem("like crowds", "extraversion", 1), InventoryItem("avoid people", "extraversion", -1))
    result = score_inventory(model, tokenizer, items, InventoryConfig(response=response, persona="Be brief."))
    expected = []
    for item in items:
        if response == "agree":
            p = _manual_next(model, tokenizer, inventory.agree_prompt(tokenizer, item, "Be brief."), ["Yes", "yes", "No", "no"])
            expected.append(item.key * (np.log(p[:2].sum()) - np.log(p[2:].sum())))
        else:
            scores = []
            for reverse, points in ((False, [5, 4, 3, 2, 1]), (True, [1, 2, 3, 4, 5])):
                p = _manual_next(model, tokenizer, inventory.likert_prompt(tokenizer, item, reverse, "Be brief."),
                                 inventory.LETTERS)
                scores.append(p @ np.array(points) / p.sum())
            raw = np.mean(scores)
            expected.append(raw if item.key > 0 else 6 - raw)
    np.testing.assert_allclose(result.items["value"], expected, rtol=1e-4, atol=1e-5)
    assert result.scores["extraversion"].mean == pytest.approx(np.mean(expected), abs=1e-5)


def test_a_pure_letter_preference_cancels_in_the_likert_format(tiny_llama, monkeypatch) -> None:
    def always_a(model, tokenizer, texts, token_ids, batch_size):  # a "model" that answers A whatever it is asked
        probs = np.full((len(texts), 5), 0.01)
        probs[:, 0] = 0.96
        return probs

    monkeypatch.setattr(inventory, "next_token_probs", always_a)
    result = score_inventory(tiny_llama.model, tiny_llama.tokenizer, config=InventoryConfig(response="likert"))
    assert all(score.mean == pytest.approx(3.0) for score in result.scores.values())


def test_persona_prompts_move_the_real_models_extraversion(smollm2) -> None:
    """Validity: an outgoing persona must score higher on extraversion than a reserved one."""
    items = [i for i in load_inventory() if i.trait == "extraversion"]
    outgoing, reserved = (score_inventory(smollm2.model, smollm2.tokenizer, items, InventoryConfig(persona=p))
                          for p in (OUTGOING, RESERVED))
    difference = paired_difference(outgoing, reserved, "extraversion")
    assert difference.low > 0, difference


def test_cli_prints_and_writes_scores(tmp_path, capsys) -> None:
    import json

    from interp.cli import main

    out = tmp_path / "traits.json"
    assert main(["traits", "--model", "tiny-random-llama", "--response", "likert", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(trait in printed for trait in TRAITS)
    saved = json.loads(out.read_text())
    assert set(saved["scores"]) == set(TRAITS) and len(saved["items"]) == len(load_inventory())
    assert main(["traits", "--model", "tiny-random-llama", "--out", str(out)]) == 2  # no silent overwrite
