"""A capability probe: does an intervened model (e.g. a neuron-suppressed export) still work?

The probe is a set of easy multiple-choice cloze items (world facts, word meaning, arithmetic in
words, grammar, common sense, sequences; ``activations/prompts/capability.jsonl``). Each item is a
sentence start and 2-4 short continuations, one of them right. Scoring needs no generation, no chat
template and no answer parsing, so it measures the model and not a template or a parser:

1. Tokenise the prompt and each choice apart and concatenate the ids, so the prompt part is the same
   ids for every choice (tokenising ``prompt + choice`` as one string can merge tokens across the
   seam and give each choice a different context). The tokenizer's BOS is put in front only when the
   tokenizer adds one by default, so the model reads text as it usually does.
2. Each prompt runs once (left-padded, position ids counted over real tokens, so padding changes
   nothing for a real token); its keys and values are repeated for each of its choices, which run
   after it. Most of an item's tokens are its prompt, so this costs about a third of scoring every
   (item, choice) sequence in full.
3. A choice's score is the sum of log P(token | everything before it) over its tokens; the per-token
   mean is kept too. The prediction is the argmax of the sum; the item's margin is the right
   choice's sum minus the best wrong choice's sum (> 0 exactly when the item is right, barring ties).
4. Accuracy with a 95% Wilson interval (items are independent Bernoulli trials), and the chance level
   (mean of 1 / n_choices) it must be compared with.
5. Comparing two models on the same items (``compare_capability``) is paired: the accuracy difference
   and the mean margin change come with a paired bootstrap over items, and the exact McNemar test
   (a two-sided binomial test on the discordant items: right -> wrong vs wrong -> right) asks whether
   the flips lean one way more than chance would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import nn
from transformers.cache_utils import DynamicCache

from interp.causal.uncertainty import mean_difference, wilson
from training.reply_metrics import Interval

MIN_CHOICES = 2


@dataclass(frozen=True)
class CapabilityItem:
    """One cloze item: ``prompt`` continued by each of ``choices``; ``choices[answer]`` is right."""

    id: str
    """Unique within a probe; pairs items across models in ``compare_capability``."""
    category: str
    """Free-form group name used for per-category accuracy (e.g. ``arithmetic``)."""
    prompt: str
    """The start of a sentence, raw text (no chat template), without a trailing space."""
    choices: tuple[str, ...]
    """Continuations, each usually starting with a space (``" cold"``)."""
    answer: int
    """Index of the right choice."""

    def __post_init__(self) -> None:
        if len(self.choices) < MIN_CHOICES:
            raise ValueError(f"item {self.id!r} has {len(self.choices)} choice(s); give at least {MIN_CHOICES}")
        if not 0 <= self.answer < len(self.choices):
            raise ValueError(f"item {self.id!r}: answer {self.answer} is not an index into its {len(self.choices)} "
                             f"choices; use 0..{len(self.choices) - 1}")
        if not self.prompt.strip():
            raise ValueError(f"item {self.id!r} has an empty prompt; the choices need a context to be scored in")
        if any(not choice.strip() for choice in self.choices):
            raise ValueError(f"item {self.id!r} has an empty choice; every choice needs at least one token")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"item {self.id!r} repeats a choice; make its choices distinct")


def builtin_capability_path() -> Path:
    """The probe shipped with the project (package data)."""
    return Path(str(resources.files("activations") / "prompts" / "capability.jsonl"))


def _item_from_record(record: object, where: str) -> CapabilityItem:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: each line must be a JSON object with id, category, prompt, choices, answer")
    missing = [key for key in ("id", "prompt", "choices", "answer") if key not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; each line needs id, prompt, choices, answer "
                         "(category optional)")
    choices, answer = record["choices"], record["answer"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"{where}: choices must be a list of strings")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise ValueError(f"{where}: answer must be an integer index into choices, got {answer!r}")
    return CapabilityItem(str(record["id"]), str(record.get("category") or ""), str(record["prompt"]),
                          tuple(choices), answer)


def load_capability_items(path: str | Path | None = None) -> tuple[CapabilityItem, ...]:
    """The built-in probe (``path=None``) or a user's ``.jsonl`` with the same fields, validated.

    Each line: ``{"id": ..., "category": ..., "prompt": ..., "choices": [...], "answer": <index>}``.
    Any problem is one ``ValueError`` naming the file, line and item, and the fix.

    Writing items: give each prompt a few words of context. Without a BOS token (SmolLM2 adds none)
    the first token is read with no context at all, so a one-word prompt ("They" -> " were" / " was")
    measures that edge case rather than grammar; the small model got such items wrong."""
    path = builtin_capability_path() if path is None else Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"capability file {path} does not exist; pass a .jsonl file or None for the built-in probe")
    items: list[CapabilityItem] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg}); each line must be one object") from None
        try:
            item = _item_from_record(record, where)
        except ValueError as error:
            message = str(error)
            raise ValueError(message if message.startswith(where) else f"{where}: {message}") from None
        if item.id in first_line:
            raise ValueError(f"{where}: id {item.id!r} already used on line {first_line[item.id]}; give each item a "
                             "unique id")
        first_line[item.id] = number
        items.append(item)
    if not items:
        raise ValueError(f"capability file {path} holds no items; add at least one")
    return tuple(items)


@dataclass(frozen=True)
class CapabilityScores:
    """One model's scores on a probe, item by item, plus the summary."""

    item_ids: tuple[str, ...]
    """Item ids, in the probe's order."""
    categories: tuple[str, ...]
    """Each item's category."""
    answers: tuple[int, ...]
    """Each item's right choice."""
    choice_logprobs: tuple[tuple[float, ...], ...]
    """Per item, per choice: sum over the choice's tokens of log P(token | prompt, earlier tokens)."""
    choice_logprobs_per_token: tuple[tuple[float, ...], ...]
    """The same sums divided by each choice's token count (length-normalised)."""
    predicted: tuple[int, ...]
    """Argmax of the summed log-probs."""
    correct: tuple[bool, ...]
    """``predicted == answer``."""
    margins: tuple[float, ...]
    """Right choice's summed log-prob minus the best wrong choice's (nats)."""
    accuracy: Interval
    """Share of items right, with a 95% Wilson interval."""
    chance: float
    """Expected accuracy of guessing: mean over items of 1 / n_choices."""

    def by_category(self) -> dict[str, Interval]:
        """Accuracy per category (Wilson intervals), categories in first-seen order."""
        grouped: dict[str, list[bool]] = {}
        for category, right in zip(self.categories, self.correct):
            grouped.setdefault(category, []).append(right)
        return {category: _accuracy(flags) for category, flags in grouped.items()}

    def wrong_items(self) -> tuple[str, ...]:
        """Ids of the items the model gets wrong."""
        return tuple(item_id for item_id, right in zip(self.item_ids, self.correct) if not right)

    def to_dict(self) -> dict:
        return {"n_items": len(self.item_ids), "accuracy": self.accuracy.to_dict(), "chance": self.chance,
                "by_category": {k: v.to_dict() for k, v in self.by_category().items()},
                "items": [{"id": i, "category": c, "answer": a, "predicted": p, "correct": r, "margin": m,
                           "choice_logprobs": list(s), "choice_logprobs_per_token": list(t)}
                          for i, c, a, p, r, m, s, t in zip(self.item_ids, self.categories, self.answers,
                                                            self.predicted, self.correct, self.margins,
                                                            self.choice_logprobs, self.choice_logprobs_per_token)]}


def _accuracy(flags: Sequence[bool]) -> Interval:
    hits, n = int(sum(flags)), len(flags)
    low, high = wilson(hits, n)
    # wilson's closed form can stray past [0, 1] by rounding at 0 or n hits
    return Interval(hits / n, max(0.0, low), min(1.0, high), "Wilson score, items as trials", n)


def _prefix_ids(tokenizer) -> list[int]:
    """``[bos]`` when the tokenizer puts a BOS in front by default, else ``[]``."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    default = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return [bos] if default[:1] == [bos] and plain[:1] != [bos] else []


def _encoded(items: Sequence[CapabilityItem], tokenizer) -> list[tuple[list[int], list[list[int]]]]:
    """(prompt ids, each choice's ids) per item."""
    prefix = _prefix_ids(tokenizer)
    encoded = []
    for item in items:
        prompt = prefix + tokenizer(item.prompt, add_special_tokens=False)["input_ids"]
        choices = []
        for choice in item.choices:
            continuation = tokenizer(choice, add_special_tokens=False)["input_ids"]
            if not continuation:
                raise ValueError(f"item {item.id!r}: choice {choice!r} tokenises to nothing; give it visible text")
            choices.append(continuation)
        encoded.append((prompt, choices))
    return encoded


def _item_batches(encoded: Sequence[tuple[list[int], list[list[int]]]], batch_size: int) -> list[list[int]]:
    """Items grouped so a batch holds at most ``batch_size`` choices (one item at least), longest prompts
    first (less padding)."""
    order = sorted(range(len(encoded)), key=lambda k: -len(encoded[k][0]))
    batches: list[list[int]] = [[]]
    for k in order:
        if batches[-1] and sum(len(encoded[j][1]) for j in batches[-1]) + len(encoded[k][1]) > batch_size:
            batches.append([])
        batches[-1].append(k)
    return batches


def _score_batch(model: nn.Module, batch: Sequence[tuple[list[int], list[list[int]]]], pad_id: int,
                 device: torch.device) -> list[float]:
    """Summed log P of every choice of every item in ``batch`` (items in order, choices in order).

    Each prompt is run once, left-padded so every prompt ends in the same column, with position ids
    counted over real tokens; its keys and values are then repeated for each of its choices, which are
    run right-padded after it (padding after a real token cannot change it: attention is causal). The
    prompt's last logits score each choice's first token, the choice's own logits the rest."""
    width = max(len(prompt) for prompt, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (prompt, _) in enumerate(batch):
        ids[row, width - len(prompt):], mask[row, width - len(prompt):] = torch.tensor(prompt), 1
    cache = DynamicCache()
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device), past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    first = out.logits[:, -1].to(torch.promote_types(out.logits.dtype, torch.float32)).log_softmax(-1)
    owner = [row for row, (_, choices) in enumerate(batch) for _ in choices]
    choices = [choice for _, item_choices in batch for choice in item_choices]
    cache.batch_select_indices(torch.tensor(owner, device=device))  # each prompt's keys once per choice
    length = max(len(choice) for choice in choices)
    choice_ids = torch.full((len(choices), length), pad_id, dtype=torch.long)
    choice_mask = torch.zeros((len(choices), length), dtype=torch.long)
    for row, choice in enumerate(choices):
        choice_ids[row, : len(choice)], choice_mask[row, : len(choice)] = torch.tensor(choice), 1
    prompt_lengths = torch.tensor([len(batch[row][0]) for row in owner])
    positions = prompt_lengths[:, None] + torch.arange(length)[None, :]
    sums = [float(first[row, choice[0]]) for row, choice in zip(owner, choices)]
    if length > 1:  # the choices' own logits score their second token on
        rest = model(input_ids=choice_ids.to(device), attention_mask=torch.cat([mask[owner], choice_mask], 1).to(device),
                     position_ids=positions.to(device), past_key_values=cache, use_cache=True).logits
        logp = rest[:, :-1].to(torch.promote_types(rest.dtype, torch.float32)).log_softmax(-1)
        following = logp.gather(-1, choice_ids[:, 1:, None].to(device)).squeeze(-1) * choice_mask[:, 1:].to(device)
        sums = [head + float(tail) for head, tail in zip(sums, following.sum(-1))]
    return sums


@torch.no_grad()
def score_capability(model: nn.Module, tokenizer, items: Sequence[CapabilityItem], *,
                     batch_size: int = 32) -> CapabilityScores:
    """Score ``model`` on ``items`` by the log-likelihood of each choice after the prompt.

    ``batch_size`` counts (item, choice) sequences per forward pass; each prompt is run once and shared
    by its choices (``_score_batch``). The model's mode (train/eval), device and dtype are left as they
    are; inputs go to the device of its first parameter."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not items:
        raise ValueError("no items to score; pass load_capability_items() or your own items")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids repeat; give each item a unique id (compare_capability pairs items by id)")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked, so any id works
    encoded = _encoded(items, tokenizer)
    sums: list[list[float]] = [[] for _ in items]
    for batch in _item_batches(encoded, batch_size):
        flat = iter(_score_batch(model, [encoded[k] for k in batch], pad_id, device))
        for k in batch:
            sums[k] = [next(flat) for _ in encoded[k][1]]
    lengths = np.array([len(choice) for _, choices in encoded for choice in choices])
    return _summarise(items, np.array([value for item_sums in sums for value in item_sums]), lengths)


def _summarise(items: Sequence[CapabilityItem], sums: np.ndarray, lengths: np.ndarray) -> CapabilityScores:
    per_item, per_token, predicted, margins = [], [], [], []
    offset = 0
    for item in items:
        n = len(item.choices)
        scores, counts = sums[offset: offset + n], lengths[offset: offset + n]
        offset += n
        wrong = np.delete(scores, item.answer)
        per_item.append(tuple(float(s) for s in scores))
        per_token.append(tuple(float(s) for s in scores / counts))
        predicted.append(int(np.argmax(scores)))
        margins.append(float(scores[item.answer] - wrong.max()))
    correct = tuple(p == item.answer for p, item in zip(predicted, items))
    return CapabilityScores(
        item_ids=tuple(item.id for item in items), categories=tuple(item.category for item in items),
        answers=tuple(item.answer for item in items), choice_logprobs=tuple(per_item),
        choice_logprobs_per_token=tuple(per_token), predicted=tuple(predicted), correct=correct,
        margins=tuple(margins), accuracy=_accuracy(correct),
        chance=float(np.mean([1 / len(item.choices) for item in items])))


@dataclass(frozen=True)
class CapabilityChange:
    """How a model (``other``) differs from a reference on the same probe items, paired by item."""

    n_items: int
    """Items compared."""
    reference_accuracy: float
    """Reference model's accuracy."""
    other_accuracy: float
    """Compared model's accuracy."""
    accuracy_difference: Interval
    """other - reference accuracy, with a paired bootstrap 95% interval over items."""
    right_to_wrong: int
    """Items the reference gets right and the other model gets wrong."""
    wrong_to_right: int
    """Items the reference gets wrong and the other model gets right."""
    mcnemar_p: float
    """Exact two-sided McNemar p-value (binomial test on the discordant items); 1.0 when none differ."""
    margin_change: Interval
    """Mean over items of (other - reference) margin in nats, paired bootstrap 95% interval."""
    flipped_items: tuple[str, ...]
    """Ids of the items whose correctness differs between the two models."""

    def to_dict(self) -> dict:
        return {"n_items": self.n_items, "reference_accuracy": self.reference_accuracy,
                "other_accuracy": self.other_accuracy, "accuracy_difference": self.accuracy_difference.to_dict(),
                "right_to_wrong": self.right_to_wrong, "wrong_to_right": self.wrong_to_right,
                "mcnemar_p": self.mcnemar_p, "margin_change": self.margin_change.to_dict(),
                "flipped_items": list(self.flipped_items)}


def compare_capability(reference: CapabilityScores, other: CapabilityScores, *, n_boot: int = 2000,
                       seed: int = 0) -> CapabilityChange:
    """Paired comparison of two models' scores on the same items (``other`` minus ``reference``)."""
    if reference.item_ids != other.item_ids:
        raise ValueError("the two scores cover different items (or a different order); score both models on the "
                         "same load_capability_items() result")
    ref_right = np.asarray(reference.correct, dtype=float)
    other_right = np.asarray(other.correct, dtype=float)
    right_to_wrong = int(((ref_right == 1) & (other_right == 0)).sum())
    wrong_to_right = int(((ref_right == 0) & (other_right == 1)).sum())
    discordant = right_to_wrong + wrong_to_right
    # scipy's two-sided binomial test at p = 0.5 equals the doubled smaller tail of the exact McNemar test
    mcnemar_p = 1.0 if discordant == 0 else float(stats.binomtest(wrong_to_right, discordant, 0.5).pvalue)
    method = "paired bootstrap over items (percentile)"
    accuracy = mean_difference(ref_right, other_right, n_boot=n_boot, seed=seed)
    margins = mean_difference(np.asarray(reference.margins), np.asarray(other.margins), n_boot=n_boot, seed=seed)
    flipped = tuple(i for i, a, b in zip(reference.item_ids, reference.correct, other.correct) if a != b)
    return CapabilityChange(
        n_items=len(reference.item_ids), reference_accuracy=float(ref_right.mean()),
        other_accuracy=float(other_right.mean()),
        accuracy_difference=Interval(accuracy.value, accuracy.low, accuracy.high, method, accuracy.n),
        right_to_wrong=right_to_wrong, wrong_to_right=wrong_to_right, mcnemar_p=mcnemar_p,
        margin_change=Interval(margins.value, margins.low, margins.high, method, margins.n), flipped_items=flipped)
