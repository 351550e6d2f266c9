"""In-context demonstrations: drawn from the training topics only, rendered before the question as
chat turns, and used by the behaviour and inventory measurements exactly as a manual prompt would be."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activations.sampling import sample_replies
from training.behavior import BehaviorConfig, behavior_prompts, measure_behavior, sample_keys, sampling_config
from training.examples import IGNORE_INDEX, chat_prompt, encode_example
from training.in_context import Demonstrations
from training.inventory import InventoryConfig, InventoryItem, agree_prompt, score_inventory
from training.studies import study_data


def test_demonstrations_are_seeded_training_rows_of_the_trait() -> None:
    shown = Demonstrations("personality", "openness", shots=5, seed=3).rows()
    data = study_data("personality", "openness")
    assert len(shown) == 5 and set(shown) <= set(data.train)
    assert not {r.topic for r in shown} & set(data.test_topics)  # no held-out topic is ever shown
    assert Demonstrations("personality", "openness", shots=5, seed=3).rows() == shown
    assert Demonstrations("personality", "openness", shots=5, seed=4).rows() != shown
    injected = Demonstrations("injection", "openness", shots=5, seed=3).rows()
    assert [r.topic for r in injected] == [r.topic for r in shown] and injected != shown  # same rows, emojis added


def test_specs_name_a_study_and_a_trait_or_say_how() -> None:
    assert Demonstrations.parse("injection:neuroticism", None).trait == "neuroticism"
    assert Demonstrations.parse("personality", "openness").study == "personality"
    with pytest.raises(ValueError, match="STUDY:TRAIT"):
        Demonstrations.parse("personality", None)
    with pytest.raises(ValueError, match="unknown study"):
        BehaviorConfig(in_context="emojis")
    with pytest.raises(ValueError, match="unknown trait"):
        InventoryConfig(in_context="personality:kindness")


def test_history_comes_before_the_question_and_is_never_learned(tiny_llama) -> None:
    tokenizer = tiny_llama.tokenizer
    history = Demonstrations("personality", "extraversion", shots=2).messages()
    text = chat_prompt(tokenizer, "Do you like jazz?", history)
    positions = [text.index(turn["content"]) for turn in history] + [text.index("Do you like jazz?")]
    assert positions == sorted(positions) and text.endswith(chat_prompt(tokenizer, "Do you like jazz?")[-30:])
    example = encode_example(tokenizer, "Do you like jazz?", "Yes, a lot.", 4096, history=history)
    learned = [i for i, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned).startswith("Yes, a lot.")  # the demonstrations' answers are context only


def test_prompted_behaviour_equals_sampling_the_prompts_by_hand(tiny_llama) -> None:
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    config = BehaviorConfig(trait="extraversion", samples=2, max_questions=3, neutral_prompts=0, reference_mass=False,
                            max_new_tokens=6, in_context="injection", shots=2)
    result = measure_behavior(model, tokenizer, config)
    group = behavior_prompts(config)[0]
    history = Demonstrations("injection", "extraversion", shots=2).messages()
    prompts = [tokenizer(chat_prompt(tokenizer, q, history), add_special_tokens=False).input_ids for q in group.texts]
    replies = sample_replies(model, tokenizer, prompts, sample_keys(group), sampling_config(config), samples=2)[0]
    assert [g.text for g in result.generations] == [r.text for r in replies]
    plain = measure_behavior(model, tokenizer, BehaviorConfig(**{**config.__dict__, "in_context": None}))
    assert [g.text for g in plain.generations] != [g.text for g in result.generations]


def test_prompted_inventory_equals_a_manual_recomputation(tiny_llama) -> None:
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    items = (InventoryItem("enjoy parties", "extraversion", 1), InventoryItem("stay home", "extraversion", -1),
             InventoryItem("like crowds", "extraversion", 1), InventoryItem("avoid people", "extraversion", -1))
    config = InventoryConfig(in_context="personality:extraversion", shots=2)
    result = score_inventory(model, tokenizer, items, config)
    history = config.history()
    assert history == Demonstrations("personality", "extraversion", shots=2).messages()
    words = [tokenizer.encode(w, add_special_tokens=False)[0] for w in ("Yes", "yes", "No", "no")]
    expected = []
    for item in items:
        ids = tokenizer(agree_prompt(tokenizer, item, None, history), return_tensors="pt",
                        add_special_tokens=False).input_ids
        with torch.no_grad():
            p = model(ids).logits[0, -1].softmax(-1)[words].numpy()
        expected.append(item.key * (np.log(p[:2].sum()) - np.log(p[2:].sum())))
    np.testing.assert_allclose(result.items["value"], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(score_inventory(model, tokenizer, items).items["value"], expected, atol=1e-4)
