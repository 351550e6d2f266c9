"""Token batches for the causal experiments: teacher-forced answers, writing contexts, neutral chats.

Teacher-forced batches are right-padded, except writing contexts, which are left-padded so that
every row's one scored position is the last column (the LM head then runs on one position per row).
``TokenBatch.model_inputs()`` passes position ids counted over real tokens, so either side is
exact; base and merged models (same tokenizer) see identical ids, which position-aligned patching
needs.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from activations.prompt_sets import PromptSet, apply_template, template_adds_special_tokens
from activations.roles import TokenRole, encode_prompt
from activations.sites import unwrap_model


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids, which positions are real, and which positions' predictions count."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    score_mask: Bool[Tensor, "batch pos"]
    """True where the logits at that position (predicting the next token) enter a metric."""
    ids: tuple[str, ...]
    """One id per row, for the generated-text records."""

    def __post_init__(self) -> None:
        if not self.input_ids.shape == self.attention_mask.shape == self.score_mask.shape:
            raise ValueError("input_ids, attention_mask and score_mask must have the same (batch, pos) shape")
        if len(self.ids) != self.input_ids.shape[0]:
            raise ValueError(f"{len(self.ids)} ids for {self.input_ids.shape[0]} rows")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_scored(self) -> int:
        return int(self.score_mask.sum())

    @property
    def left_padded(self) -> bool:
        return bool(self.attention_mask[:, -1].all()) and not bool(self.attention_mask[:, 0].all())

    def model_inputs(self) -> dict[str, Tensor]:
        """``input_ids``, ``attention_mask`` and ``position_ids`` counted over real tokens."""
        positions = (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": positions}

    def split(self, batch_size: int) -> Iterator[TokenBatch]:
        """Consecutive row chunks, each cut to its own longest row (less padding to compute)."""
        left = self.left_padded
        for start in range(0, len(self), batch_size):
            rows = slice(start, start + batch_size)
            width = int(self.attention_mask[rows].sum(1).max())
            cols = slice(self.input_ids.shape[1] - width, None) if left else slice(0, width)
            yield TokenBatch(self.input_ids[rows, cols], self.attention_mask[rows, cols],
                             self.score_mask[rows, cols], self.ids[rows])

    def to(self, device: str | torch.device) -> TokenBatch:
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.score_mask.to(device), self.ids)

    def scored_span(self) -> slice:
        """The positions from the first to the last one any row scores."""
        scored = self.score_mask.any(0).nonzero().flatten()
        if len(scored) == 0:
            return slice(0, 0)
        return slice(int(scored[0]), int(scored[-1]) + 1)


def takes_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(unwrap_model(model).forward).parameters


def scored_forward(model: nn.Module, batch: TokenBatch) -> tuple[Tensor, Tensor]:
    """``(logits, score_mask)`` cut to ``batch.scored_span()``: the LM head (a fifth of a small
    model's compute) runs only on positions a metric reads, via ``logits_to_keep`` where the model
    takes it. Masked-mean metrics give the same value as on the full logits."""
    span = batch.scored_span()
    if not takes_logits_to_keep(model):
        return model(**batch.model_inputs()).logits, batch.score_mask
    keep = torch.arange(span.start, span.stop, device=batch.input_ids.device)
    logits = model(**batch.model_inputs(), logits_to_keep=keep).logits
    return logits, batch.score_mask[:, span]


def _pad_right(rows: list[list[int]], scored: list[list[bool]], pad_id: int, ids: Sequence[str],
               left: bool = False) -> TokenBatch:
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    score = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, mask) in enumerate(zip(rows, scored)):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        input_ids[i, cols] = torch.tensor(row)
        attention[i, cols] = 1
        score[i, cols] = torch.tensor(mask)
    return TokenBatch(input_ids, attention, score, tuple(ids))


def teacher_forced_batch(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    continuations: Sequence[str] | None = None,
    *,
    template: str = "user",
    ids: Sequence[str] | None = None,
) -> TokenBatch:
    """Templated prompts followed by a fixed continuation (e.g. a reference answer).

    Scored positions are those predicting the continuation's tokens; with an empty continuation,
    the position predicting the first reply token. Prompt and continuation are tokenised apart
    and concatenated, so the prompt part is identical for every continuation.
    """
    continuations = list(continuations) if continuations is not None else [""] * len(prompts)
    if len(continuations) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    special = template_adds_special_tokens(template)
    rows, scored = [], []
    for prompt, continuation in zip(prompts, continuations):
        head = tokenizer(apply_template(tokenizer, prompt, template), add_special_tokens=special).input_ids
        tail = tokenizer(continuation, add_special_tokens=False).input_ids if continuation else []
        total = len(head) + len(tail)
        first, stop = len(head) - 1, max(len(head), total - 1)
        rows.append(head + tail)
        scored.append([first <= p < stop for p in range(total)])
    ids = ids or [f"q{i:04d}" for i in range(len(prompts))]
    return _pad_right(rows, scored, tokenizer.pad_token_id, ids)


def reference_answer_batch(tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], answers: Sequence[str],
                           ids: Sequence[str] | None = None) -> TokenBatch:
    """Questions as chat prompts followed by their reference answers and the end-of-turn token,
    tokenised exactly as training does (``training.examples.encode_example``); scored positions
    predict answer and end-of-turn tokens."""
    from training.examples import collate, encode_example

    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} reference answers")
    examples = [encode_example(tokenizer, q, a, max_length=4096) for q, a in zip(questions, answers)]
    batch = collate(examples, tokenizer.pad_token_id)
    scored = torch.zeros_like(batch.labels, dtype=torch.bool)
    scored[:, :-1] = batch.labels[:, 1:] != -100  # position t predicts answer token t + 1
    return TokenBatch(batch.input_ids, batch.attention_mask, scored, tuple(ids or (f"q{i:04d}" for i in range(len(questions)))))


def writing_batch(tokenizer: PreTrainedTokenizerBase, prompts: PromptSet, limit: int | None = None) -> TokenBatch:
    """Teacher-forced contexts that end where a reply is about to show its behaviour.

    ``prompts`` is a writing set (``activations.writing.writing_prompts``: replies read after their
    questions, marked before each occurrence). Each context is the chat up to and including the
    reply's first marked token, and only that last position is scored: its next-token distribution
    is the one that started the behaviour. Short contexts keep the many exact passes of the causal
    stages cheap."""
    rows, scored, ids = [], [], []
    for i in range(len(prompts) if limit is None else min(limit, len(prompts))):
        encoded = encode_prompt(tokenizer, prompts.texts[i], "assistant", prompts.marks_of(i), prompts.controls_of(i),
                                prompts.context_of(i))
        marked = [p for p, role in enumerate(encoded.roles) if role == TokenRole.MARKED]
        if not marked:
            continue
        end = marked[0] + 1
        rows.append(list(encoded.ids[:end]))
        scored.append([p == end - 1 for p in range(end)])
        ids.append(prompts.ids[i])
    if not rows:
        raise ValueError(f"{prompts.name}: no prompt has a marked position to score; pass replies that show the behaviour")
    return _pad_right(rows, scored, tokenizer.pad_token_id, ids, left=True)


def chat_batch(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], ids: Sequence[str] | None = None) -> TokenBatch:
    """Texts as templated user turns (the chat a model meets in use), scored from the position that
    predicts the first content token to the one that predicts the reply: next-token KL and
    perplexity there measure side effects where the model reads and is about to answer."""
    rows, scored = [], []
    for text in texts:
        encoded = encode_prompt(tokenizer, text, "user")
        content = [p for p, role in enumerate(encoded.roles) if role != TokenRole.TEMPLATE]
        if not content:
            raise ValueError(f"neutral text {text[:40]!r} has no content tokens in the chat template")
        first = content[0] - 1
        rows.append(list(encoded.ids))
        scored.append([first <= p < len(encoded) for p in range(len(encoded))])
    return _pad_right(rows, scored, tokenizer.pad_token_id, ids or [f"n{i:04d}" for i in range(len(texts))])
