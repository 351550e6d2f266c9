"""Token roles, role-scoped reductions, length-matched twins and writing positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activations.capture import capture
from activations.hooks import recording
from activations.prompt_sets import PromptSet, emoji_spans, load_prompt_set
from activations.roles import TokenRole, encode_prompt
from activations.sites import neuron_sites
from activations.twins import filler_twins
from activations.behaviors import Behavior
from activations.writing import writing_prompts


def _by_role(tokenizer, encoded) -> dict[int, str]:
    out: dict[int, list[int]] = {}
    for token, role in zip(encoded.ids, encoded.roles):
        out.setdefault(role, []).append(token)
    return {role: tokenizer.decode(ids) for role, ids in out.items()}


def test_roles_split_template_content_marks_and_controls(tiny_llama):
    tokenizer = tiny_llama.tokenizer
    text = "Great fun 🎉 and more."
    encoded = encode_prompt(tokenizer, text, "user", emoji_spans(text), ((len(text) - 1, len(text)),))
    roles = _by_role(tokenizer, encoded)
    assert roles[TokenRole.CONTENT] == "Great fun and more"
    assert roles[TokenRole.MARKED] == " 🎉" and roles[TokenRole.CONTROL] == "."
    assert "<|im_start|>system" in roles[TokenRole.TEMPLATE] and encoded.roles[0] == TokenRole.TEMPLATE
    raw = encode_prompt(tokenizer, "Great fun", "raw")
    assert raw.roles[0] == TokenRole.TEMPLATE  # position 0 never enters a content reduction, even raw
    with_context = encode_prompt(tokenizer, "Yes!", "assistant", context="Do you like it?")
    assert _by_role(tokenizer, with_context)[TokenRole.CONTENT] == "Yes!"


@pytest.mark.parametrize("side", ["left", "right"])
def test_scoped_reductions_equal_a_manual_recomputation(tiny_llama, side):
    import copy

    from activations import LoadedModel

    tokenizer = copy.deepcopy(tiny_llama.tokenizer)
    tokenizer.padding_side = side
    prompts = load_prompt_set("emoji").head(5)
    every = ("content_mean", "content_absmean", "content_max", "marked_mean", "context_mean", "mean", "last")
    with capture(LoadedModel(tiny_llama.model, tokenizer, "tiny", "tiny"), None, prompts, None, batch_size=5,
                 reductions=every) as cache:
        for i, text in enumerate(prompts.texts):
            encoded = encode_prompt(tokenizer, text, "user", prompts.marks_of(i))
            with recording(neuron_sites(tiny_llama.model)) as acts, torch.inference_mode():
                tiny_llama.model(torch.tensor([encoded.ids]))
            roles = torch.tensor(encoded.roles)
            for layer in range(3):
                a = acts[layer][0].double()
                expected = {"content_mean": a[roles >= 1].mean(0), "content_absmean": a[roles >= 1].abs().mean(0),
                            "content_max": a[roles >= 1].amax(0), "marked_mean": a[roles == 2].mean(0),
                            "context_mean": a[roles == 1].mean(0), "mean": a.mean(0), "last": a[-1]}
                for name, value in expected.items():
                    np.testing.assert_allclose(cache.reduction(name)[i, layer], value.numpy(), atol=2e-6, err_msg=name)
        stats = cache.token_stats()
        assert stats.all.count == int(cache.n_tokens.sum())
        assert stats.content.count == int(cache.role_counts[:, 1:].sum())


def test_prompts_without_marks_get_nan_only_where_undefined(tiny_llama):
    prompts = PromptSet.from_texts(["no emoji here", "one 🎉 here"])
    with capture(tiny_llama, None, prompts, None) as cache:
        marked = cache.reduction("marked_mean")
        assert cache.defined("marked_mean").tolist() == [False, True]
        assert np.isnan(marked[0]).all() and np.isfinite(marked[1]).all()
        assert np.isfinite(cache.reduction("content_mean")).all()


def test_in_memory_capture_equals_the_file(tiny_llama, tmp_path):
    prompts = load_prompt_set("emoji").head(6)
    with capture(tiny_llama, None, prompts, None, batch_size=4) as memory, \
            capture(tiny_llama, None, prompts, tmp_path / "c.h5", batch_size=4) as disk:
        assert memory.path is None and not list(tmp_path.glob("*.partial.h5"))
        for name in memory.reductions:
            np.testing.assert_array_equal(memory.reduction(name), disk.reduction(name))
        assert memory.marks() == disk.marks() and memory.prompt_ids == disk.prompt_ids


def test_filler_twins_are_token_for_token_matched(tiny_llama):
    tokenizer = tiny_llama.tokenizer
    prompts = load_prompt_set("emoji").head(40)
    twins = filler_twins(prompts, tokenizer, "user", seeds=(1, 2))
    assert len(twins.original) + len(twins.dropped) == 40 and len(twins.original) >= 35
    assert twins.twins[0].ids == twins.original.ids == twins.twins[1].ids
    for i, text in enumerate(twins.original.texts):
        original = encode_prompt(tokenizer, text, "user", twins.original.marks_of(i))
        for twin_set in twins.twins:
            twin = encode_prompt(tokenizer, twin_set.texts[i], "user", twin_set.marks_of(i))
            assert len(twin) == len(original) and twin.roles == original.roles
            unmarked = [r != TokenRole.MARKED for r in original.roles]
            assert [a for a, keep in zip(twin.ids, unmarked) if keep] == [a for a, keep in zip(original.ids, unmarked) if keep]
            assert not emoji_spans(twin_set.texts[i])  # the twin has no emoji left
    assert twins.twins[0].texts != twins.twins[1].texts  # independent draws
    again = filler_twins(prompts, tokenizer, "user", seeds=(1, 2))
    assert again.twins[0].texts == twins.twins[0].texts  # seeded


def test_writing_positions_mark_the_token_before_each_emoji():
    text = "I love it! 🎉 Parties are fun. Let us go 😄 and dance. Bye!🥳🥳"
    emoji = Behavior.emoji()
    marks, controls = emoji.decision_spans(text)
    assert [text[s:e] for s, e in marks] == ["!", "o", "!"]
    assert [text[s:e] for s, e in controls] == [".", "."]
    prompts = writing_prompts(["a", "b"], ["Q1?", "Q2?"], [text, "No emoji at all."], emoji)
    assert prompts.ids == ("a",) and prompts.contexts == ("Q1?",)
    assert writing_prompts(["b"], ["Q?"], ["No emoji."], emoji) is None


def test_bad_prompts_get_one_clear_error(tiny_gpt2, tmp_path):
    (tmp_path / "missing.csv").write_text("id,text\na,hello\nb\n")  # a short row: no text cell at all
    with pytest.raises(ValueError, match=r"prompts \['b'\] have no text"):
        load_prompt_set(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("id,text\na,hello\nb,\n")
    with pytest.raises(ValueError, match=r"prompts \['b'\] have empty text"):
        load_prompt_set(tmp_path / "empty.csv")
    (tmp_path / "null.jsonl").write_text('{"id": "a", "text": "hi"}\n{"id": "b", "text": null}\n')
    with pytest.raises(ValueError, match=r"prompts \['b'\] have no text"):
        load_prompt_set(tmp_path / "null.jsonl")
    (tmp_path / "bom.csv").write_bytes("\ufefftext,id\nhello,a\n".encode())
    assert load_prompt_set(tmp_path / "bom.csv").texts == ("hello",)
    with pytest.raises(ValueError, match="longer than the model's context of 1024 tokens"):
        capture(tiny_gpt2, None, ["word " * 2000], tmp_path / "long.h5", template="raw")
    assert not list(tmp_path.glob("long*"))  # refused before any file was made
    with pytest.raises(ValueError, match="span"):
        PromptSet("x", ("a",), ("hi",), ("",), marks=(((0, 9),),))
