"""A Big-Five inventory scored from the model's own next-token probabilities, with no external
service.

1. Items are statements about "you" (``training/data/inventory.csv``, written for this project: 12
   per trait, half of them reverse-keyed), or a user's CSV with columns ``text, trait, key``
   (key ``1``/``+`` or ``-1``/``-``); every trait needs items of both keyings.
2. Two response formats (``InventoryConfig.response``):
   - ``likert`` (the MPI approach, Jiang et al. 2023): five lettered options, the assistant turn
     opened with ``Answer: (``; the five letters' renormalised probabilities give the expected
     score on 1..5. Small models prefer some letters whatever the question, so each item is asked
     with the options in both orders and the two expected scores averaged (a pure letter preference
     cancels). Reverse-keyed items are reversed (6 - score).
   - ``agree``: "Do you ...? Answer yes or no."; the item's value is log P(yes) - log P(no) (both
     capitalisations), times the key.
3. A trait's score is the mean keyed value over its items. Its interval treats the two keyings as
   two samples (Welch): with a balanced scale, a tendency to agree with everything (acquiescence,
   which personas and fine-tunes shift too) cancels from the mean but would inflate an interval
   taken over all items as one sample. ``answer_mass`` (the probability the model puts on the
   allowed answers at all) says whether the model is answering.
4. ``paired_difference`` compares two runs (e.g. two personas) item by item, with the same
   keying-group interval and a Welch t test.

Measured on SmolLM2-135M-Instruct (README): the ``likert`` format shows no item sensitivity at all
(letter probabilities nearly the same for every item; extraversion under an outgoing vs a reserved
persona differs by -0.00003 [-0.0014, 0.0013]), so ``agree`` is the default.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from activations.context import check_fits_context
from training.config import InventoryConfig
from training.data import TRAITS
from training.examples import chat_prompt

LIKERT = ("Very accurate", "Moderately accurate", "Neither accurate nor inaccurate", "Moderately inaccurate",
          "Very inaccurate")
"""The options, from score 5 down to 1."""
LETTERS = ("A", "B", "C", "D", "E")


@dataclass(frozen=True)
class InventoryItem:
    text: str
    """What the statement says "you" do, e.g. ``start conversations with people you have just met``."""
    trait: str
    key: int
    """+1: agreeing means more of the trait; -1: reverse-keyed."""


def default_inventory_path() -> Path:
    return Path(__file__).with_name("data") / "inventory.csv"


def load_inventory(path: str | Path | None = None) -> tuple[InventoryItem, ...]:
    """Items from a CSV with columns ``text, trait, key`` (a UTF-8 BOM is fine)."""
    path = Path(path) if path is not None else default_inventory_path()
    if not path.is_file():
        raise FileNotFoundError(f"inventory {path} does not exist; give a CSV with columns text, trait, key")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"text", "trait", "key"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} lacks columns {sorted(missing)}; an inventory CSV has columns text, trait, key")
        items, problems = [], []
        for line, row in enumerate(reader, start=2):
            text, trait = (row.get("text") or "").strip(), (row.get("trait") or "").strip().lower()
            key = {"1": 1, "+1": 1, "+": 1, "-1": -1, "-": -1}.get((row.get("key") or "").strip())
            if not text or trait not in TRAITS or key is None:
                problems.append(line)
                continue
            items.append(InventoryItem(text, trait, key))
    if problems:
        raise ValueError(f"{path}: rows on lines {problems[:5]} need a text, a trait ({', '.join(TRAITS)}) and a key "
                         "(1 or -1)")
    if not items:
        raise ValueError(f"{path} holds no items")
    return tuple(items)


@dataclass(frozen=True)
class TraitScore:
    trait: str
    mean: float
    """Mean keyed item value (likert: on 1..5; agree: log-odds of agreeing, keyed)."""
    low: float
    high: float
    n_items: int


@dataclass(frozen=True)
class InventoryResult:
    config: InventoryConfig
    items: pd.DataFrame
    """One row per item: text, trait, key, value (keyed), raw (unkeyed), answer_mass."""
    scores: dict[str, TraitScore] = field(default_factory=dict)

    @property
    def answer_mass(self) -> float:
        """Mean probability on the allowed answers: near 1 when the model is answering."""
        return float(self.items["answer_mass"].mean())

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "answer_mass": self.answer_mass,
                "scores": {t: asdict(s) for t, s in self.scores.items()},
                "items": self.items.to_dict(orient="records")}

    @classmethod
    def from_dict(cls, data: dict) -> InventoryResult:
        """The result ``to_dict`` wrote (e.g. read back from JSON)."""
        return cls(InventoryConfig(**data["config"]), pd.DataFrame(data["items"]),
                   {t: TraitScore(**s) for t, s in data["scores"].items()})


def likert_prompt(tokenizer: PreTrainedTokenizerBase, item: InventoryItem, reverse: bool, persona: str | None,
                  history: Sequence[dict[str, str]] = ()) -> str:
    """Step 2, ``likert``: the chat text that ends just before the answer letter."""
    options = LIKERT[::-1] if reverse else LIKERT
    listed = "\n".join(f"({letter}) {option}" for letter, option in zip(LETTERS, options))
    question = (f'Here is a statement about you: "You {item.text}."\nHow accurately does it describe you? '
                f"Choose one option.\n{listed}\nReply with the letter of your choice.")
    return chat_prompt(tokenizer, question, history, persona) + "Answer: ("


def agree_prompt(tokenizer: PreTrainedTokenizerBase, item: InventoryItem, persona: str | None,
                 history: Sequence[dict[str, str]] = ()) -> str:
    """Step 2, ``agree``: the chat text whose next token is the answer."""
    return chat_prompt(tokenizer, f"Do you {item.text}? Answer yes or no.", history, persona)


def _single_tokens(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[int]:
    ids = [tokenizer.encode(word, add_special_tokens=False) for word in words]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"the tokenizer splits the answers {list(words)} into several tokens; the inventory needs "
                         "each answer to be one token")
    return [i[0] for i in ids]


@torch.inference_mode()
def next_token_probs(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], token_ids: list[int],
                     batch_size: int) -> np.ndarray:
    """``(n, len(token_ids))``: each token's next-token probability after each text."""
    check_fits_context(model, [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts],
                       "an item's prompt", "show fewer in-context --shots")
    wanted = torch.tensor(token_ids)
    device = next(model.parameters()).device
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # the last position is every row's answer slot
    try:
        rows = []
        for start in tqdm(range(0, len(texts), batch_size), desc="inventory", unit="batch", leave=False):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            logits = model(**batch).logits[:, -1].float()
            rows.append(logits.softmax(-1)[:, wanted.to(device)].cpu().numpy())
    finally:
        tokenizer.padding_side = side
    return np.concatenate(rows).astype(np.float64)


def _likert_values(model, tokenizer, items, config) -> tuple[np.ndarray, np.ndarray]:
    history = config.history()
    texts = [likert_prompt(tokenizer, item, reverse, config.persona, history) for reverse in (False, True)
             for item in items]
    probs = next_token_probs(model, tokenizer, texts, _single_tokens(tokenizer, LETTERS), config.batch_size)
    mass = probs.sum(1)
    normalised = probs / mass[:, None]
    forward = normalised[: len(items)] @ np.array([5, 4, 3, 2, 1], dtype=np.float64)
    reversed_ = normalised[len(items) :] @ np.array([1, 2, 3, 4, 5], dtype=np.float64)
    return (forward + reversed_) / 2, (mass[: len(items)] + mass[len(items) :]) / 2


def _agree_values(model, tokenizer, items, config) -> tuple[np.ndarray, np.ndarray]:
    history = config.history()
    texts = [agree_prompt(tokenizer, item, config.persona, history) for item in items]
    probs = next_token_probs(model, tokenizer, texts, _single_tokens(tokenizer, ("Yes", "yes", "No", "no")),
                             config.batch_size)
    yes, no = probs[:, :2].sum(1), probs[:, 2:].sum(1)
    return np.log(yes) - np.log(no), yes + no


def keyed_mean(values: np.ndarray, keys: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean of ``values * keys`` (likert values centred on 3 first) with the keying-group interval of
    step 3: ``(mean(+keyed) - mean(-keyed)) / 2`` and a Welch standard error."""
    pos, neg = values[keys > 0], values[keys < 0]
    if len(pos) < 2 or len(neg) < 2:
        raise ValueError("each trait needs at least 2 items of each keying for an interval")
    mean = (pos.mean() - neg.mean()) / 2
    var_p, var_n = pos.var(ddof=1) / len(pos), neg.var(ddof=1) / len(neg)
    se = np.sqrt(var_p + var_n) / 2
    if se == 0:
        return float(mean), float(mean), float(mean)
    dof = (var_p + var_n) ** 2 / (var_p**2 / (len(pos) - 1) + var_n**2 / (len(neg) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * se)
    return float(mean), float(mean - half), float(mean + half)


def score_inventory(model: nn.Module, tokenizer: PreTrainedTokenizerBase, items: Sequence[InventoryItem] | None = None,
                    config: InventoryConfig = InventoryConfig()) -> InventoryResult:
    """Steps 2-3 of the module docstring."""
    items = tuple(items) if items is not None else load_inventory()
    measure = _likert_values if config.response == "likert" else _agree_values
    raw, mass = measure(model, tokenizer, items, config)
    keys = np.array([item.key for item in items])
    centred = raw - 3 if config.response == "likert" else raw  # likert: keyed = 6 - score around the midpoint 3
    offset = 3.0 if config.response == "likert" else 0.0
    table = pd.DataFrame({"text": [i.text for i in items], "trait": [i.trait for i in items], "key": keys,
                          "value": centred * keys + offset, "raw": raw, "answer_mass": mass})
    scores = {}
    for trait in [t for t in TRAITS if t in set(table["trait"])]:
        rows = table["trait"] == trait
        mean, low, high = keyed_mean(centred[rows.to_numpy()], keys[rows.to_numpy()], config.confidence)
        scores[trait] = TraitScore(trait, mean + offset, low + offset, high + offset, int(rows.sum()))
    return InventoryResult(config, table, scores)


@dataclass(frozen=True)
class Difference:
    trait: str
    value: float
    """Mean over items of (first - second) keyed item values."""
    low: float
    high: float
    n_items: int


def paired_difference(first: InventoryResult, second: InventoryResult, trait: str,
                      confidence: float = 0.95) -> Difference:
    """Step 4: ``first`` minus ``second`` on ``trait``, paired by item."""
    a = first.items[first.items["trait"] == trait].set_index("text")
    b = second.items[second.items["trait"] == trait].set_index("text")
    if len(a) == 0 or set(a.index) != set(b.index):
        raise ValueError(f"both inventories must score the same {trait} items to be compared item by item")
    diffs = (a["raw"] - b.loc[a.index, "raw"]).to_numpy()
    value, low, high = keyed_mean(diffs, a["key"].to_numpy(), confidence)
    return Difference(trait, value, low, high, len(diffs))
