"""Emojis vs personality: once the emoji neurons are suppressed, does the trait stay?

Four models answer the same held-out questions (sampled, emoji rate with a cluster-bootstrap
interval over questions) and the same inventory items of the study's trait
(``training.inventory``, keyed log-odds of agreeing, keying-group interval):

- base, and merged (the fine-tune);
- merged-suppressed: the exported suppressor (``interp suppress``), reloaded from disk;
- random-suppressed: the merged model with a matched random set of the same size mean-ablated
  (the sweep's first random set at the chosen k: same layers, same write-norm deciles, same seed).

Each model's trait score is also given as a paired difference from the merged model's, item by
item. The question is decidable only if the fine-tune moved the trait at all (merged vs base);
``Separability.sentence`` says which case the data are in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from activations import load_model
from activations.prompt_sets import load_prompt_set
from interp.causal.controls import control_pool, matched_random_sets, strata, write_norms
from interp.causal.setup import CausalSetup, split_neutral, table_sets
from interp.interventions import NeuronSet, ablate, content_reference

MODELS = ("base", "merged", "merged-suppressed", "random-suppressed")


@dataclass(frozen=True)
class SeparabilityRow:
    model: str
    emoji_rate: dict[str, float]
    """value, low, high (sampled replies to held-out questions)."""
    trait: dict[str, float]
    """mean, low, high of the inventory score for the study's trait."""
    vs_merged: dict[str, float] | None
    """Paired item difference from the merged model's trait score (None for merged itself)."""
    answer_mass: float


@dataclass(frozen=True)
class Separability:
    trait: str
    rows: tuple[SeparabilityRow, ...]
    random_set: list[list[int]]
    samples: int

    def row(self, model: str) -> SeparabilityRow:
        return next(r for r in self.rows if r.model == model)

    def sentence(self) -> str:
        moved = self.row("base").vs_merged
        sup = self.row("merged-suppressed")
        if moved is None or (moved["low"] <= 0 <= moved["high"]):
            return (f"The fine-tune did not measurably move {self.trait} (base - merged "
                    f"{moved['value']:+.2f} [{moved['low']:+.2f}, {moved['high']:+.2f}]), so whether the trait survives "
                    "suppression cannot be decided here; the emoji rates below still show what suppression removes.")
        kept = sup.vs_merged is not None and sup.vs_merged["low"] <= 0 <= sup.vs_merged["high"]
        return (f"Suppression changes {self.trait} by {sup.vs_merged['value']:+.2f} [{sup.vs_merged['low']:+.2f}, "
                f"{sup.vs_merged['high']:+.2f}] against the merged model: "
                + ("the trait stays while the emojis go: separable." if kept else "the trait moves with the emojis."))

    def to_dict(self) -> dict[str, Any]:
        return {"trait": self.trait, "samples": self.samples, "random_set": self.random_set,
                "sentence": self.sentence(), "rows": [asdict(r) for r in self.rows]}


def _random_set(merged: torch.nn.Module, means_source, table: pd.DataFrame, chosen: NeuronSet, k: int,
                seed: int) -> NeuronSet:
    """The sweep's first matched random set at ``k`` (``interp.causal.sweep``: same pool, strata, seed)."""
    flagged, outliers, _ = table_sets(table)
    with torch.no_grad():
        norms = write_norms(merged, means_source.mean_square)
    pool = control_pool(norms.shape, flagged=flagged, outliers=outliers)
    for layer, index in chosen:
        pool[layer, index] = False
    return matched_random_sets(chosen, strata(norms), pool, 1, seed + 7919 * k).sets[0]


def separability(merged_spec: str, base_spec: str, suppressed_dir: str | Path, neurons_csv: str | Path,
                 sweep_result: dict[str, Any], behavior, setup: CausalSetup = CausalSetup(),
                 samples: int = 2) -> Separability:
    """Module docstring; ``behavior`` is the study's ``BehaviorConfig`` (its trait and questions),
    sampled ``samples`` times per question for every model."""
    from training.behavior import measure_behavior
    from training.inventory import InventoryConfig, load_inventory, paired_difference, score_inventory

    trait = behavior.trait
    items = [item for item in load_inventory() if item.trait == trait]
    config = replace(behavior, samples=samples, neutral_prompts=0, reference_mass=False)
    merged = load_model(merged_spec)
    tokenizer = merged.tokenizer
    neutral = split_neutral(load_prompt_set("neutral"), setup)
    reference = content_reference(merged.model, tokenizer, neutral.reference, batch_size=setup.batch_size,
                                  seed=setup.seed)
    choice = sweep_result["choice"]
    chosen = NeuronSet.from_pairs(choice["neurons"])
    random_set = _random_set(merged.model, reference, pd.read_csv(neurons_csv), chosen, int(choice["k"]), setup.seed)
    measured = {}
    for name in MODELS:
        if name == "random-suppressed":
            context, model = ablate(merged.model, random_set, "mean", reference.means), merged.model
        else:
            spec = {"base": base_spec, "merged": merged_spec, "merged-suppressed": str(suppressed_dir)}[name]
            context, model = torch.no_grad(), (merged.model if name == "merged" else load_model(spec).model)
        with context:
            behaviour = measure_behavior(model, tokenizer, config, model_label=name)
            inventory = score_inventory(model, tokenizer, items, InventoryConfig())
        measured[name] = (behaviour.groups[0].emoji_rate, inventory)  # the held-out questions (no neutral group)
    rows = []
    for name, (rate, inventory) in measured.items():
        difference = None if name == "merged" else asdict(paired_difference(inventory, measured["merged"][1], trait))
        score = inventory.scores[trait]
        rows.append(SeparabilityRow(name, {"value": rate.value, "low": rate.low, "high": rate.high},
                                    {"mean": score.mean, "low": score.low, "high": score.high}, difference,
                                    inventory.answer_mass))
    return Separability(trait, tuple(rows), [list(map(int, n)) for n in random_set], samples)


def rows_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows for the report (from ``Separability.to_dict()``)."""
    header = ["model", "emoji rate (sampled)", f"{result['trait']} (inventory)", "minus merged (paired)",
              "yes/no answer mass"]
    rows = []
    for r in result["rows"]:
        e, t, d = r["emoji_rate"], r["trait"], r["vs_merged"]
        rows.append([r["model"], f"{e['value']:.0%} [{e['low']:.0%}, {e['high']:.0%}]",
                     f"{t['mean']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}]",
                     "-" if d is None else f"{d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]",
                     f"{r['answer_mass']:.2f}" if np.isfinite(r["answer_mass"]) else "-"])
    return header, rows
