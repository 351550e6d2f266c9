"""Chat-formatted training examples with the loss on the answer only.

1. The prompt is the chat template applied to the question as a user turn, with the generation
   prompt (``<|im_start|>assistant\\n`` for SmolLM2): exactly the text the model sees at inference.
2. The answer is tokenized on its own and appended, followed by the template's end-of-turn text.
   Tokenizing the pieces separately (rather than the whole conversation) makes the training ids
   the ones generation would produce after that prompt, with no BPE merge across the boundary.
3. Labels copy the ids of the answer and of the end-of-turn token (so the model learns to stop),
   and are -100 everywhere else: system prompt, question, template markup, the newline after the
   end-of-turn, and padding. Padding is masked by position, not by id, because SmolLM2 pads with
   its end-of-turn token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""The label value that ``CrossEntropyLoss`` (and HF's causal-LM loss) skips."""


@dataclass(frozen=True)
class EncodedExample:
    """One tokenized (question, answer) pair."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    """``input_ids`` on answer and end-of-turn tokens, ``IGNORE_INDEX`` elsewhere."""
    answer_start: int
    """Index of the first answer token."""
    truncated: bool


@dataclass(frozen=True)
class Batch:
    """Right-padded tensors for a causal-LM forward pass."""

    input_ids: Tensor  # (B, T) long
    attention_mask: Tensor  # (B, T) long, 1 on real tokens
    labels: Tensor  # (B, T) long, IGNORE_INDEX off the answers


def chat_prompt(tokenizer: PreTrainedTokenizerBase, question: str, history: Sequence[dict[str, str]] = (),
                system: str | None = None) -> str:
    """The templated user turn plus generation prompt, as a string; after earlier chat turns
    ``history`` (e.g. in-context demonstrations) and a system prompt ``system`` (None: the template's
    default) when given."""
    messages = [*([{"role": "system", "content": system}] if system else []), *history,
                {"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def end_of_turn_text(tokenizer: PreTrainedTokenizerBase, question: str, answer: str) -> str:
    """What the template writes after an assistant answer (``<|im_end|>\\n`` for SmolLM2)."""
    prompt = chat_prompt(tokenizer, question)
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt + answer):
        raise ValueError(
            "the tokenizer's chat template does not render an assistant answer as prompt + answer + suffix; "
            "answer-only loss masking needs that layout (use a model with a ChatML-like template)"
        )
    return full[len(prompt) + len(answer) :]


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def encode_example(tokenizer: PreTrainedTokenizerBase, question: str, answer: str, max_length: int,
                   history: Sequence[dict[str, str]] = ()) -> EncodedExample:
    """Tokenize one pair (see module docstring), after ``history`` turns if given; long answers are
    cut to fit ``max_length``."""
    prompt_ids = _ids(tokenizer, chat_prompt(tokenizer, question, history))
    answer_ids = _ids(tokenizer, answer)
    suffix_ids = _ids(tokenizer, end_of_turn_text(tokenizer, question, answer))
    # Learn the end-of-turn token (to stop), not what the template writes after it.
    eos = tokenizer.eos_token_id
    learned_suffix = suffix_ids[: suffix_ids.index(eos) + 1] if eos in suffix_ids else suffix_ids[:1]
    rest_suffix = suffix_ids[len(learned_suffix) :]
    if len(prompt_ids) >= max_length:
        raise ValueError(
            f"the prompt alone is {len(prompt_ids)} tokens but max_length is {max_length}; raise max_length"
        )
    target = answer_ids + learned_suffix
    truncated = len(prompt_ids) + len(target) > max_length
    target = target[: max_length - len(prompt_ids)]
    tail = [] if truncated else rest_suffix[: max_length - len(prompt_ids) - len(target)]
    input_ids = prompt_ids + target + tail
    labels = [IGNORE_INDEX] * len(prompt_ids) + target + [IGNORE_INDEX] * len(tail)
    return EncodedExample(tuple(input_ids), tuple(labels), len(prompt_ids), truncated)


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]], max_length: int
) -> list[EncodedExample]:
    """Encode (question, answer) pairs; logs how many answers had to be cut."""
    examples = [encode_example(tokenizer, q, a, max_length) for q, a in pairs]
    cut = sum(example.truncated for example in examples)
    if cut:
        log.warning("%d of %d answers were cut to max_length=%d tokens", cut, len(examples), max_length)
    return examples


def collate(examples: list[EncodedExample], pad_token_id: int) -> Batch:
    """Right-pad to the longest example; padding gets attention 0 and label ``IGNORE_INDEX``."""
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        attention_mask[row, :length] = 1
        labels[row, :length] = torch.tensor(example.labels)
    return Batch(input_ids, attention_mask, labels)
