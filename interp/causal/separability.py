"""Behaviour vs personality: once the behaviour's neurons are suppressed, does the trait stay?

Four models answer the same held-out questions (sampled, the behaviour's rate with a cluster-bootstrap
interval over questions; base, merged and merged-suppressed reuse the replies the behaviour and
suppress stages sampled, the random-suppressed model is sampled here) and the same inventory items
of the study's trait (``training.inventory``, keyed log-odds of agreeing, keying-group interval):

- base, and merged (the fine-tune);
- merged-suppressed: the exported suppressor (``interp suppress``), reloaded from disk;
- random-suppressed: the merged model with a matched random set of the same size mean-ablated
  (the sweep's first random set at the chosen k: same layers, same write-norm deciles, same seed).

Each model's trait score is also given as a paired difference from the merged model's, item by
item. The question is decidable only if the fine-tune moved the trait at all (merged vs base);
``Separability.sentence`` says which case the data are in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from activations import load_model
from activations.behaviors import Behavior
from interp.causal.controls import control_pool, matched_random_sets, strata, write_norms
from interp.causal.intactness import style_markers
from activations.sampling import SampledReply
from interp.causal.setup import CausalSetup, neutral_reference, table_sets
from interp.causal.suppression import per_question_rates
from interp.causal.uncertainty import paired_mean_difference, rate
from interp.interventions import NeuronSet, ablate

MODELS = ("base", "merged", "merged-suppressed", "random-suppressed")


@dataclass(frozen=True)
class SeparabilityRow:
    model: str
    rate: dict[str, float]
    """value, low, high, replies (sampled replies to held-out questions, cluster bootstrap over questions)."""
    trait: dict[str, float]
    """mean, low, high of the inventory score for the study's trait."""
    reply_trait: dict[str, float]
    """value, low, high: mean per-reply probability of the trait's voice (``training.trait_classifier``,
    punctuation included), cluster bootstrap over questions; ``vs_merged_*``: the paired difference from
    merged by question."""
    reply_words: dict[str, float]
    """The same for the words-only voice (punctuation not a feature)."""
    exclamations: dict[str, float]
    """The same for exclamation marks per reply."""
    vs_merged: dict[str, float] | None
    """Paired item difference from the merged model's trait score (None for merged itself)."""
    answer_mass: float


@dataclass(frozen=True)
class Separability:
    trait: str
    behavior: Behavior
    rows: tuple[SeparabilityRow, ...]
    random_set: list[list[int]]
    samples: int
    classifier: dict[str, dict[str, float]]
    """Per voice measure (``voice``, ``words only``): accuracy on the voice corpus's held-out topics and on
    the Opinion-QA answers (value, low, high, n), and the penalty."""

    def row(self, model: str) -> SeparabilityRow:
        return next(r for r in self.rows if r.model == model)

    def sentence(self) -> str:
        base, merged, sup = self.row("base"), self.row("merged"), self.row("merged-suppressed")
        voice = sup.reply_trait
        parts = [f"The fine-tune moved the replies' {self.trait} voice from {base.reply_trait['value']:.2f} to "
                 f"{merged.reply_trait['value']:.2f} (classifier); suppression takes the {self.behavior.noun} rate from "
                 f"{merged.rate['value']:.0%} to {sup.rate['value']:.0%} and changes the voice by "
                 f"{voice.get('vs_merged', float('nan')):+.2f} [{voice.get('vs_merged_low', float('nan')):+.2f}, "
                 f"{voice.get('vs_merged_high', float('nan')):+.2f}] against merged."]
        parts.append(self._style_sentence())
        moved = base.vs_merged
        if moved is not None and moved["low"] <= 0 <= moved["high"]:
            parts.append(f"The inventory did not register the fine-tune (base - merged {moved['value']:+.2f} "
                         f"[{moved['low']:+.2f}, {moved['high']:+.2f}]), so it cannot speak to separability.")
        elif sup.vs_merged is not None:
            d = sup.vs_merged
            parts.append(f"Inventory, suppressed - merged: {d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}].")
        return " ".join(parts)

    def _style_sentence(self) -> str:
        """Exclamation marks beside the voice, and whether the voice change of suppression survives
        without punctuation (if not, the measure saw a change of style, not of words)."""
        merged, sup = self.row("merged"), self.row("merged-suppressed")
        marks, voice, plain = sup.exclamations, sup.reply_trait, sup.reply_words
        text = (f"Exclamation marks per reply: merged {merged.exclamations['value']:.2f}, suppressed "
                f"{marks['value']:.2f} ({marks.get('vs_merged', float('nan')):+.2f} "
                f"[{marks.get('vs_merged_low', float('nan')):+.2f}, {marks.get('vs_merged_high', float('nan')):+.2f}]).")
        if "vs_merged" not in voice or "vs_merged" not in plain:
            return text
        moved = lambda row: not row["vs_merged_low"] <= 0 <= row["vs_merged_high"]  # noqa: E731
        if moved(voice) and not moved(plain):
            return (text + f" The voice change goes with punctuation: words only, it is {plain['vs_merged']:+.2f} "
                    f"[{plain['vs_merged_low']:+.2f}, {plain['vs_merged_high']:+.2f}], so this measure cannot tell "
                    "the trait from the style here.")
        return text + (f" Words only, the voice changes by {plain['vs_merged']:+.2f} [{plain['vs_merged_low']:+.2f}, "
                       f"{plain['vs_merged_high']:+.2f}].")

    def to_dict(self) -> dict[str, Any]:
        return {"trait": self.trait, "behavior": self.behavior.spec, "noun": self.behavior.noun, "samples": self.samples, "random_set": self.random_set,
                "classifier": self.classifier,
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


def _sample_heldout(model: torch.nn.Module, tokenizer, behavior_config, samples: int) -> list[SampledReply]:
    from activations.prompt_sets import apply_template
    from activations.sampling import sample_replies
    from training.behavior import behavior_prompts, sample_keys, sampling_config

    heldout = behavior_prompts(behavior_config)[0]
    prompts = [tokenizer(apply_template(tokenizer, q, "user"), add_special_tokens=False).input_ids for q in heldout.texts]
    with torch.no_grad():
        return sample_replies(model, tokenizer, prompts, sample_keys(heldout), sampling_config(behavior_config),
                              samples=samples, desc="random-suppressed model")[0]


def separability(merged_spec: str, base_spec: str, suppressed_dir: str | Path, neurons_csv: str | Path,
                 sweep_result: dict[str, Any], replies: dict[str, list[SampledReply]], behavior: Behavior,
                 behavior_config, setup: CausalSetup = CausalSetup(), samples: int = 2) -> Separability:
    """Module docstring. ``replies`` holds the sampled held-out replies already drawn for ``base``,
    ``merged`` and ``merged-suppressed`` (the behaviour and suppress stages); only the random-suppressed
    model is sampled here, ``samples`` times per question of ``behavior_config`` (the study's
    ``training.behavior.BehaviorConfig``)."""
    from training.inventory import InventoryConfig, load_inventory, paired_difference, score_inventory
    from training.trait_classifier import ClassifierConfig, train_classifier

    trait = behavior_config.trait
    items = [item for item in load_inventory() if item.trait == trait]
    merged = load_model(merged_spec)
    tokenizer = merged.tokenizer
    reference = neutral_reference(merged.model, tokenizer, setup)[1]
    choice = sweep_result["choice"]
    chosen = NeuronSet.from_pairs(choice["neurons"])
    random_set = _random_set(merged.model, reference, pd.read_csv(neurons_csv), chosen, int(choice["k"]), setup.seed)
    sampled, inventories = dict(replies), {}
    for name in MODELS:
        if name == "random-suppressed":
            with ablate(merged.model, random_set, "mean", reference.means):
                sampled[name] = _sample_heldout(merged.model, tokenizer, behavior_config, samples)
                inventories[name] = score_inventory(merged.model, tokenizer, items, InventoryConfig())
        else:
            model = merged.model if name == "merged" else load_model(
                base_spec if name == "base" else str(suppressed_dir)).model
            inventories[name] = score_inventory(model, tokenizer, items, InventoryConfig())
    classifiers = {"voice": train_classifier(), "words only": train_classifier(config=ClassifierConfig(punctuation=False))}
    measures = {**{name: (lambda texts, c=c: c.trait_scores(texts, trait)) for name, c in classifiers.items()},
                "exclamations": lambda texts: np.array([style_markers(text)["exclamations"] for text in texts])}
    per_question = {measure: {name: _per_question(sampled[name], score([r.text for r in sampled[name]]))
                              for name in MODELS} for measure, score in measures.items()}
    rows = []
    for name in MODELS:
        shown = rate(per_question_rates(sampled[name], behavior)[1], seed=setup.seed)
        summaries = {measure: _against_merged(values, name, setup.seed) for measure, values in per_question.items()}
        difference = None if name == "merged" else asdict(paired_difference(inventories[name], inventories["merged"],
                                                                             trait))
        score = inventories[name].scores[trait]
        rows.append(SeparabilityRow(name, {"value": shown.value, "low": shown.low, "high": shown.high,
                                           "replies": len(sampled[name])},
                                    {"mean": score.mean, "low": score.low, "high": score.high},
                                    summaries["voice"], summaries["words only"], summaries["exclamations"], difference,
                                    inventories[name].answer_mass))
    accuracy = {name: {"heldout": asdict(c.heldout), "transfer": asdict(c.transfer), "l2": c.l2}
                for name, c in classifiers.items()}
    return Separability(trait, behavior, tuple(rows), [list(map(int, n)) for n in random_set], samples, accuracy)


def _against_merged(values: dict[str, dict[str, float]], name: str, seed: int) -> dict[str, float]:
    """``name``'s per-question values (``values[model][question]``): the mean with its cluster-bootstrap
    interval, and the paired difference from merged by question (not for merged itself, nor when the
    two answered different questions)."""
    mine, merged = values[name], values["merged"]
    summary = rate(np.array(list(mine.values())), seed=seed)
    out = {"value": summary.value, "low": summary.low, "high": summary.high}
    if name != "merged" and set(mine) == set(merged):
        keys = sorted(mine)
        against = paired_mean_difference(np.array([mine[k] for k in keys]), np.array([merged[k] for k in keys]),
                                         seed=seed)
        out.update(vs_merged=against.value, vs_merged_low=against.low, vs_merged_high=against.high)
    return out


def _per_question(replies: list[SampledReply], values: np.ndarray) -> dict[str, float]:
    """Question key -> mean of ``values`` over its replies."""
    by_key: dict[str, list[float]] = {}
    for reply, value in zip(replies, values):
        by_key.setdefault(reply.key, []).append(float(value))
    return {key: float(np.mean(v)) for key, v in by_key.items()}


def rows_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows for the report (from ``Separability.to_dict()``)."""
    header = ["model", "replies", f"{result['noun']} rate (sampled)", f"{result['trait']} voice per reply",
              "voice minus merged", "voice, words only", "words only minus merged", "! per reply",
              "! minus merged", f"{result['trait']} (inventory)", "minus merged (paired)", "yes/no answer mass"]
    rows = []
    for r in result["rows"]:
        e, t, d = r["rate"], r["trait"], r["vs_merged"]
        cells = []
        for v in (r["reply_trait"], r["reply_words"], r["exclamations"]):
            cells += [f"{v['value']:.2f} [{v['low']:.2f}, {v['high']:.2f}]",
                      f"{v['vs_merged']:+.2f} [{v['vs_merged_low']:+.2f}, {v['vs_merged_high']:+.2f}]"
                      if "vs_merged" in v else "-"]
        rows.append([r["model"], e.get("replies", "-"), f"{e['value']:.0%} [{e['low']:.0%}, {e['high']:.0%}]", *cells,
                     f"{t['mean']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}]",
                     "-" if d is None else f"{d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]",
                     f"{r['answer_mass']:.2f}" if np.isfinite(r["answer_mass"]) else "-"])
    return header, rows
