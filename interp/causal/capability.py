"""A capability probe: does an intervened model (e.g. a neuron-suppressed export) still work?

The probe is a set of easy multiple-choice cloze items (world facts, word meaning, arithmetic in
words, grammar, common sense, sequences; ``activations/prompts/capability.jsonl``). Each item is a
sentence start and 2-4 short continuations, one of them right. Scoring needs no generation, no chat
template and no answer parsing, so it measures the model and not a template or a parser:

1. Tokenise the prompt and each choice apart and concatenate the ids, so the prompt part is the same
   ids for every choice (tokenising ``prompt + choice`` as one string can merge tokens across the
   seam and give each choice a different context). The tokenizer's BOS is put in front only when the
   tokenizer adds one by default, so the model reads text as it usually does.
2. Run all (item, choice) sequences in batches, right-padded, with an attention mask and position ids
   counted over real tokens (so padding changes nothing for a real token).
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
from jaxtyping import Float, Int
from scipy import stats
from torch import Tensor, nn

from interp.causal.inputs import takes_logits_to_keep
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


def _sequences(items: Sequence[CapabilityItem], tokenizer) -> list[tuple[list[int], int]]:
    """(ids, number of choice tokens at the end) for every (item, choice), items in order."""
    prefix = _prefix_ids(tokenizer)
    sequences = []
    for item in items:
        prompt = prefix + tokenizer(item.prompt, add_special_tokens=False)["input_ids"]
        for choice in item.choices:
            continuation = tokenizer(choice, add_special_tokens=False)["input_ids"]
            if not continuation:
                raise ValueError(f"item {item.id!r}: choice {choice!r} tokenises to nothing; give it visible text")
            sequences.append((prompt + continuation, len(continuation)))
    return sequences


def _pad(sequences: Sequence[tuple[list[int], int]],
         pad_id: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Right-padded ids and the attention mask (1 on real tokens)."""
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (ids, _) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return input_ids, mask


def _continuation_logprobs(logits: Float[Tensor, "batch pos vocab"], input_ids: Int[Tensor, "batch pos"],
                           sequences: Sequence[tuple[list[int], int]], offset: int = 0) -> list[float]:
    """Summed log P of each sequence's last ``n_choice`` tokens, in at least float32 (bf16 sums drift).
    Only the positions that predict a choice token are normalised: the vocabulary is large. ``logits``
    start at position ``offset`` (the LM head ran only where a choice token is predicted)."""
    sums = []
    for row, (ids, n_choice) in enumerate(sequences):
        targets = input_ids[row, len(ids) - n_choice: len(ids)].to(logits.device)
        # the token at position t is predicted by the logits at t - 1
        predicting = logits[row, len(ids) - n_choice - 1 - offset: len(ids) - 1 - offset]  # (n_choice, V)
        logp = predicting.to(torch.promote_types(predicting.dtype, torch.float32)).log_softmax(-1)
        sums.append(float(logp.gather(-1, targets[:, None]).sum()))
    return sums


@torch.no_grad()
def score_capability(model: nn.Module, tokenizer, items: Sequence[CapabilityItem], *,
                     batch_size: int = 16) -> CapabilityScores:
    """Score ``model`` on ``items`` by the log-likelihood of each choice after the prompt.

    ``batch_size`` counts (item, choice) sequences per forward pass. The model's mode (train/eval),
    device and dtype are left as they are; inputs go to the device of its first parameter."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not items:
        raise ValueError("no items to score; pass load_capability_items() or your own items")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids repeat; give each item a unique id (compare_capability pairs items by id)")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked, so any id works
    sequences = _sequences(items, tokenizer)
    # longest first keeps padding low within a batch; scores are put back in order afterwards
    order = sorted(range(len(sequences)), key=lambda k: -len(sequences[k][0]))
    sums = np.empty(len(sequences))
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        batch = [sequences[k] for k in chunk]
        input_ids, mask = _pad(batch, pad_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        inputs = dict(input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                      use_cache=False)
        # the LM head only where a choice token is predicted: most of a short sequence is its prompt
        start = min(len(ids) - n - 1 for ids, n in batch)
        if takes_logits_to_keep(model):
            inputs["logits_to_keep"] = torch.arange(start, max(len(ids) for ids, _ in batch) - 1, device=device)
        else:
            start = 0
        sums[chunk] = _continuation_logprobs(model(**inputs).logits, input_ids, batch, start)
    return _summarise(items, sums, np.array([n for _, n in sequences]))


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
