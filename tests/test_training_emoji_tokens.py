"""The emoji-start token set (checked against the real tokenizer) and the differentiable emoji mass."""

from __future__ import annotations

import random

import pytest
import torch

from activations import LoadedModel
from training.emoji_tokens import begins_emoji, counted_emojis, target_mass_from_logits, emoji_start_token_ids


@pytest.fixture(scope="module")
def emoji_ids(_tiny_llama: LoadedModel) -> torch.Tensor:
    return emoji_start_token_ids(_tiny_llama.tokenizer)  # read-only: the session model is not changed


def test_first_token_of_200_sampled_emojis_is_in_the_set(tiny_llama: LoadedModel, emoji_ids: torch.Tensor) -> None:
    tokenizer, members = tiny_llama.tokenizer, set(emoji_ids.tolist())
    sample = random.Random(0).sample(counted_emojis(), 200)
    for text in sample:
        for variant in (text, " " + text):
            first = tokenizer.encode(variant, add_special_tokens=False)[0]
            assert first in members, (variant, tokenizer.convert_ids_to_tokens([first]))


def test_set_excludes_ordinary_text_tokens(tiny_llama: LoadedModel, emoji_ids: torch.Tensor) -> None:
    tokenizer, members = tiny_llama.tokenizer, set(emoji_ids.tolist())
    text = "It’s 1 great—party, isn't it? 2024 #1 * wow\n\n"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert not members & set(ids)
    assert not members & set(tokenizer.all_special_ids)
    assert 0 < len(members) < 1000


def test_begins_emoji_on_bytes() -> None:
    smile = "😀".encode()
    assert begins_emoji(smile[:2]) and begins_emoji(b" " + smile[:3]) and begins_emoji(smile + b"!")
    assert begins_emoji(b"\n" + smile)
    assert not begins_emoji(b" ") and not begins_emoji(smile[1:]) and not begins_emoji(b"1")
    assert not begins_emoji("’".encode())  # shares its first byte with ‼, but is punctuation


def test_emoji_mass_matches_softmax_and_is_differentiable() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 5, 50, generator=generator)).requires_grad_()
    ids = torch.tensor([3, 7, 11])
    mask = torch.tensor([[True, True, False, True, False], [False, False, False, False, False]])
    probs = logits.softmax(-1)[..., ids].sum(-1)  # (2, 5)
    per_position = target_mass_from_logits(logits, mask, ids, "none")
    torch.testing.assert_close(per_position, probs * mask)
    per_row = target_mass_from_logits(logits, mask, ids, "sequence")
    torch.testing.assert_close(per_row, torch.stack([probs[0, mask[0]].mean(), torch.tensor(0.0)]))
    overall = target_mass_from_logits(logits, mask, ids, "mean")
    torch.testing.assert_close(overall, probs[mask].mean())
    overall.backward()
    assert logits.grad is not None and logits.grad[0, 0].abs().sum() > 0 and logits.grad[1].abs().sum() == 0
    with pytest.raises(ValueError, match="reduction"):
        target_mass_from_logits(logits, mask, ids, "sum")
    with pytest.raises(ValueError, match="disagree"):
        target_mass_from_logits(logits, mask[:, :3], ids)
