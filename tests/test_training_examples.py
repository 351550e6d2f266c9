"""Chat-formatted examples: the loss sees the answer (and its end-of-turn token) and nothing else."""

from __future__ import annotations

import pytest
import torch

from activations import LoadedModel
from training.examples import IGNORE_INDEX, chat_prompt, collate, encode_example

QUESTION = "Thinking about jazz, what are your thoughts on jazz?"
ANSWER = "Jazz is a party every night! 🎉 I love dancing to it."


def test_labels_are_ignored_exactly_outside_the_answer(tiny_llama: LoadedModel) -> None:
    tokenizer = tiny_llama.tokenizer
    example = encode_example(tokenizer, QUESTION, ANSWER, max_length=256)
    prompt_ids = tokenizer(chat_prompt(tokenizer, QUESTION), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    start, stop = len(prompt_ids), len(prompt_ids) + len(answer_ids) + 1  # + the end-of-turn token
    assert example.answer_start == start
    assert list(example.input_ids[:start]) == list(prompt_ids)
    for position, (token, label) in enumerate(zip(example.input_ids, example.labels)):
        assert (label == token) if start <= position < stop else (label == IGNORE_INDEX), position
    assert example.input_ids[stop - 1] == tokenizer.eos_token_id
    learned = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned) == ANSWER + tokenizer.eos_token
    # The example is the rendered conversation, token for token.
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}], tokenize=False
    )
    assert tokenizer.decode(example.input_ids) == full


def test_collate_masks_padding_even_though_pad_is_eos(tiny_llama: LoadedModel) -> None:
    tokenizer = tiny_llama.tokenizer
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # why padding must be masked by position
    short = encode_example(tokenizer, QUESTION, "Yes.", 256)
    long = encode_example(tokenizer, QUESTION, ANSWER, 256)
    batch = collate([short, long], tokenizer.pad_token_id)
    n = len(short.input_ids)
    assert batch.input_ids.shape == (2, len(long.input_ids))
    assert torch.equal(batch.labels[0, :n], torch.tensor(short.labels))
    assert (batch.labels[0, n:] == IGNORE_INDEX).all() and (batch.attention_mask[0, n:] == 0).all()
    assert (batch.attention_mask[1] == 1).all()
    assert int((batch.labels[0] != IGNORE_INDEX).sum()) == len(tokenizer("Yes.", add_special_tokens=False)["input_ids"]) + 1


def test_truncation_keeps_the_prompt_and_cuts_the_answer(tiny_llama: LoadedModel) -> None:
    tokenizer = tiny_llama.tokenizer
    full = encode_example(tokenizer, QUESTION, ANSWER, 256)
    cut = encode_example(tokenizer, QUESTION, ANSWER, full.answer_start + 3)
    assert cut.truncated and len(cut.input_ids) == full.answer_start + 3
    assert cut.input_ids == full.input_ids[: full.answer_start + 3]
    assert sum(label != IGNORE_INDEX for label in cut.labels) == 3
    with pytest.raises(ValueError, match="raise max_length"):
        encode_example(tokenizer, QUESTION, ANSWER, 5)
