"""A behaviour as a value (``activations.behaviors``): spans, decision positions, target tokens, clear
errors for bad specs, and the causal half run end to end for a behaviour that is not emojis, checked
against a manual recomputation and a real intervention."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_helpers import tuned_copy
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from activations import LoadedModel
from activations.behaviors import Behavior
from activations.writing import writing_prompts
from interp.causal import CausalSetup, ScreenConfig, SweepConfig, find_causal_neurons, suppress, writing_batch
from interp.causal.inputs import scored_forward
from interp.interventions import ablate, content_reference
from interp.interventions.neuron_set import NeuronSet

REPLIES = ["Parties are great! [grins] I love them. See you.", "Maybe. [sighs] It depends on the day. Fine.",
           "Sure thing. [nods] Let us go. Now!", "Dancing all night! [laughs] Then sleep. Wow.",
           "I read a lot. [smiles] Books help. Yes."]
QUESTIONS = ["Do you like parties?", "Why?", "Ok?", "Plans?", "Hobbies?"]


def test_regex_spans_and_decision_positions() -> None:
    directions = Behavior.stage_directions()
    text = "Great! [grins] Ok then. [leans back] Fine [1] and [Capital] done."
    assert [text[s:e] for s, e in directions.spans(text)] == ["[grins]", "[leans back]"]  # not [1], not [Capital]
    marks, controls = directions.decision_spans(text)
    assert [text[s:e] for s, e in marks] == ["!", "."]  # the character before each direction
    assert [text[s:e] for s, e in controls] == ["."]  # the last sentence end, not followed by one
    assert directions.rate(["a [nods]", "no", "b [x y]"]) == pytest.approx(2 / 3)
    assert directions.count(text) == 2 and not directions.shows("plain text.")


def test_emoji_preset_keeps_the_emoji_spans_and_vocabulary_targets(tiny_llama) -> None:
    from activations.prompt_sets import emoji_spans
    from training.emoji_tokens import emoji_start_token_ids

    emoji = Behavior.parse("emoji")
    text = "Fun! 🎉🎉 Yes."
    assert emoji.spans(text) == emoji_spans(text)
    assert emoji.target_token_ids(tiny_llama.tokenizer) == emoji_start_token_ids(tiny_llama.tokenizer).tolist()


def test_derived_targets_are_the_tokens_that_begin_each_span(tiny_llama) -> None:
    tokenizer = tiny_llama.tokenizer
    directions = Behavior.regex(r"\[[a-z]+\]", noun="stage direction")
    ids = directions.target_token_ids(tokenizer, REPLIES)
    expected = set()
    for text in REPLIES:  # manual: re-encode the text up to and including the bracket, take the last token
        for start, _ in directions.spans(text):
            prefix = tokenizer(text[: start + 1], add_special_tokens=False).input_ids
            expected.add(prefix[-1])
    assert set(ids) == expected and all("[" in tokenizer.decode([i]) for i in ids)


def test_string_targets_take_first_tokens_and_refuse_what_the_tokenizer_cannot_write(tiny_llama) -> None:
    tokenizer = tiny_llama.tokenizer
    catch = Behavior.tokens(["Stay curious"])
    first = {tokenizer("Stay curious", add_special_tokens=False).input_ids[0],
             tokenizer(" Stay curious", add_special_tokens=False).input_ids[0]}
    assert set(catch.target_token_ids(tokenizer)) == first
    assert catch.spans("Well. Stay curious!") == ((6, 18),)
    words = Tokenizer(WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = Whitespace()
    small = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]")
    with pytest.raises(ValueError, match="cannot encode target"):
        Behavior.tokens(["goodbye"]).target_token_ids(small)


@pytest.mark.parametrize("spec, message", [
    ("regex:[unclosed", "is invalid"),
    ("regex:a*", "matches the empty string"),
    ("sparkles", "unknown behaviour 'sparkles'"),
    ("tokens:/no/such/file.txt", "does not exist"),
])
def test_bad_specs_get_one_clear_error(spec, message) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        Behavior.parse(spec)


def test_a_behaviour_never_shown_says_how_many_replies_were_checked(tiny_llama) -> None:
    with pytest.raises(ValueError, match=r"appears in 0 of the 3 replies"):
        Behavior.stage_directions().check_shown(["a.", "b.", "c."])
    with pytest.raises(ValueError, match=r"0 of 2 replies show it"):
        Behavior.regex("zzz").target_token_ids(tiny_llama.tokenizer, ["a.", "b."])


@pytest.fixture
def found(tiny_llama):
    base = tiny_llama
    tuned = LoadedModel(tuned_copy(base.model, seed=3), base.tokenizer, "tuned", "test", base.spec)
    behavior = Behavior.regex(r"\[[a-z]+\]", noun="stage direction")
    result = find_causal_neurons(base, tuned, behavior, questions=QUESTIONS, replies=REPLIES,
                                 setup=CausalSetup(n_contexts=5, n_neutral=3, reference_neutral=4, batch_size=4),
                                 screen_config=ScreenConfig(n_shortlist=6, n_guard=2, n_random=8, max_copies=4),
                                 sweep_config=SweepConfig(k_grid=(1, 4, 16), interventions=("mean",), n_random=3,
                                                          target_reduction=0.05, kl_budget=10.0, ppl_budget=10.0))
    return base, tuned, behavior, result


def test_find_causal_neurons_scores_the_behaviours_targets(found) -> None:
    base, tuned, behavior, result = found
    tokenizer = tuned.tokenizer
    writing = writing_prompts([f"q{i:04d}" for i in range(5)], QUESTIONS, REPLIES, behavior)
    batch = writing_batch(tokenizer, writing)
    ids = torch.tensor(behavior.target_token_ids(tokenizer, REPLIES))
    assert result.target_ids == tuple(ids.tolist())
    with torch.no_grad():  # manual: log P(targets) at each context's last position, unedited
        logits, _ = scored_forward(tuned.model, batch)
        manual = (torch.logsumexp(logits[:, -1, ids], -1) - torch.logsumexp(logits[:, -1], -1)).double().numpy()
    np.testing.assert_allclose(result.screen.metric_clean, manual.mean(), rtol=1e-4)
    # the chosen set's reduction, redone by a real hooked mean ablation of the same neurons
    chosen = result.neurons
    from activations.prompt_sets import load_prompt_set
    from interp.causal.setup import split_neutral

    neutral = split_neutral(load_prompt_set("neutral"), CausalSetup(n_contexts=5, n_neutral=3, reference_neutral=4))
    means = content_reference(tuned.model, tokenizer, neutral.reference, batch_size=4).means
    with torch.no_grad(), ablate(tuned.model, chosen, "mean", means):
        logits, _ = scored_forward(tuned.model, batch)
        edited = (torch.logsumexp(logits[:, -1, ids], -1) - torch.logsumexp(logits[:, -1], -1)).double().numpy()
    reduction = 1 - np.exp(edited).mean() / np.exp(manual).mean()
    assert result.sweep.choice["metrics"]["reduction"] == pytest.approx(reduction, rel=1e-3, abs=1e-6)
    assert "stage direction" in result.sentence()


def test_suppress_writes_a_plain_model_equal_to_the_hook(found, tmp_path) -> None:
    _, tuned, _, result = found
    out = suppress(tuned, "blocks.1.mlp.hook_post", [0, 5], out=tmp_path / "suppressed",
                   setup=CausalSetup(reference_neutral=4))
    assert out.n_neurons == 2 and json.loads((tmp_path / "suppressed" / "neurodiff_suppression.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "suppressed").eval()
    from activations.prompt_sets import load_prompt_set
    from interp.causal.setup import split_neutral

    neutral = split_neutral(load_prompt_set("neutral"), CausalSetup(reference_neutral=4))
    means = content_reference(tuned.model, tuned.tokenizer, neutral.reference).means
    inputs = tuned.tokenizer(["The library opens at nine."], return_tensors="pt")
    with torch.no_grad(), ablate(tuned.model, NeuronSet.from_pairs([(1, 0), (1, 5)]), "mean", means):
        hooked = tuned.model(**inputs).logits
    with torch.no_grad():
        plain = reloaded(**inputs).logits
    torch.testing.assert_close(plain, hooked, rtol=1e-4, atol=1e-4)
