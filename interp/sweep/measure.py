"""One row of the sweep: a model (base, fine-tuned or prompted) measured on one trait.

Every model answers the same held-out questions of the trait with the same random streams
(``activations.sampling``: common random numbers, so two models' replies differ only where their
distributions do), and the same inventory items of the trait. A row's files:

- ``behavior.json`` and ``behavior.generations.jsonl``: emoji rate and emoji/sentence ratio with
  cluster-bootstrap intervals over questions, and every reply (``training.behavior``);
- ``inventory.json``: the trait's inventory items, scored (``training.inventory``, keyed log-odds
  of agreeing), item by item so two rows can be compared paired by item.

The per-reply voice (``training.trait_classifier``) is scored later, once for all rows, from the
replies on disk (``interp.sweep.table``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activations import load_model
from activations.atomic_io import write_json_atomic
from interp.sweep.config import TraitSweepConfig

KINDS = ("base", "fine-tuned", "in-context")


@dataclass(frozen=True)
class Condition:
    """Which model a row measures: the base, a fine-tune on ``study``'s rows, or the base shown
    ``study``'s rows in context."""

    trait: str
    kind: str
    study: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown condition kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if (self.study is None) != (self.kind == "base"):
            raise ValueError("a fine-tuned or in-context condition names its study; the base names none")

    @property
    def label(self) -> str:
        return self.kind if self.study is None else f"{self.kind}: {self.study}"

    @property
    def folder(self) -> str:
        """Where the row's files live, relative to the sweep directory."""
        if self.kind == "base":
            return f"base/{self.trait}"
        return f"{self.study}/{self.trait}" if self.kind == "fine-tuned" else f"in-context-{self.study}/{self.trait}"

    @property
    def stage(self) -> str:
        """The name of the stage that measures it."""
        return f"measure-{self.folder.replace('/', '-')}"


def behavior_config(config: TraitSweepConfig, condition: Condition):
    from training.behavior import BehaviorConfig

    return BehaviorConfig(trait=condition.trait, samples=config.samples, max_questions=config.questions,
                          neutral_prompts=0, reference_mass=False, max_new_tokens=config.max_new_tokens,
                          seed=config.seed, shots=config.shots,
                          in_context=condition.study if condition.kind == "in-context" else None)


def inventory_config(config: TraitSweepConfig, condition: Condition):
    from training.inventory import InventoryConfig

    return InventoryConfig(shots=config.shots, seed=config.seed,
                           in_context=f"{condition.study}:{condition.trait}" if condition.kind == "in-context" else None)


def measure(model_spec: str, condition: Condition, config: TraitSweepConfig, out: Path) -> dict[str, Any]:
    """Sample and score one row into ``out`` (module docstring); returns its summary."""
    from training.behavior import measure_behavior, save_behavior
    from training.inventory import load_inventory, score_inventory

    loaded = load_model(model_spec)
    behavior = measure_behavior(loaded.model, loaded.tokenizer, behavior_config(config, condition),
                                model_label=condition.label)
    written = list(save_behavior(behavior, out / "behavior.json", overwrite=True))
    items = [item for item in load_inventory() if item.trait == condition.trait]
    inventory = score_inventory(loaded.model, loaded.tokenizer, items, inventory_config(config, condition))
    write_json_atomic(out / "inventory.json", inventory.to_dict())
    written.append(out / "inventory.json")
    group = behavior.groups[0]
    score = inventory.scores[condition.trait]
    return {"files": [str(p) for p in written], "replies": group.n_responses,
            "emoji_rate": group.rate.to_dict(), "inventory": {"mean": score.mean, "low": score.low,
                                                                   "high": score.high}}


@dataclass(frozen=True)
class RowData:
    """A measured row read back from its files."""

    condition: Condition
    behavior: dict[str, Any]
    """The held-out group of ``behavior.json`` (rate, sentence_ratio, ...)."""
    replies: list[dict[str, Any]]
    """Every generation: prompt_id, sample, text, ..."""
    inventory: Any
    """``training.inventory.InventoryResult``."""

    @classmethod
    def read(cls, root: Path, condition: Condition) -> RowData:
        from activations.atomic_io import read_jsonl
        from training.inventory import InventoryResult

        folder = root / condition.folder
        behavior = json.loads((folder / "behavior.json").read_text())["groups"][0]
        replies = read_jsonl(folder / "behavior.generations.jsonl")
        inventory = InventoryResult.from_dict(json.loads((folder / "inventory.json").read_text()))
        return cls(condition, behavior, replies, inventory)
