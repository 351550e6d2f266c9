"""The sweep's table: every row's emoji use and trait score, each with an interval, and each model
compared with its trait's base model.

Per row (``interp.sweep.measure``):

- emoji rate and emoji/sentence ratio of the sampled replies (cluster bootstrap over questions; a
  rate of exactly 0 gets the Clopper-Pearson interval over questions instead of the bootstrap's
  degenerate [0, 0], as in ``interp.causal.uncertainty.rate``);
- voice: the mean probability that a reply is in the trait's voice (``training.trait_classifier``,
  trained once here on the training topics' answers; emojis removed before scoring), averaged per
  question, cluster bootstrap over questions; ``voice - base``: the difference from the base
  model's replies to the same questions, paired by question (the replies share random streams);
- inventory: the trait's inventory score (keyed log-odds of agreeing) with its keying-group
  interval; ``inventory - base``: paired by item (``training.inventory.paired_difference``).

A fine-tune or prompt moved the trait when the paired interval excludes zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interp.causal.uncertainty import clopper_pearson, paired_mean_difference, rate
from interp.sweep.config import TraitSweepConfig
from interp.sweep.measure import Condition, RowData


def conditions(config: TraitSweepConfig) -> list[Condition]:
    """Every row, trait by trait: base, each fine-tune, each in-context prompt."""
    rows = []
    for trait in config.traits:
        rows.append(Condition(trait, "base"))
        rows += [Condition(trait, "fine-tuned", study) for study in config.studies]
        rows += [Condition(trait, "in-context", study) for study in config.in_context]
    return rows


@dataclass(frozen=True)
class SweepRow:
    trait: str
    condition: str
    replies: int
    emoji_rate: dict[str, float]
    emoji_sentence_ratio: dict[str, float]
    voice: dict[str, float]
    voice_vs_base: dict[str, float] | None
    inventory: dict[str, float]
    inventory_vs_base: dict[str, float] | None
    answer_mass: float
    """Probability the model puts on yes/no when asked an inventory item (near 1: it is answering)."""


def _interval(estimate: Any) -> dict[str, float]:
    return {"value": float(estimate.value), "low": float(estimate.low), "high": float(estimate.high)}


def per_question(row: RowData, values) -> dict[str, float]:
    """Question id -> mean of ``values`` (one per reply, in ``row.replies`` order) over its replies."""
    by_question: dict[str, list[float]] = {}
    for reply, value in zip(row.replies, values, strict=True):
        by_question.setdefault(reply["prompt_id"], []).append(float(value))
    return {key: float(np.mean(v)) for key, v in sorted(by_question.items())}


def per_question_voice(row: RowData, classifier) -> dict[str, float]:
    """Question id -> mean voice probability of its replies."""
    texts = [r["text"] for r in row.replies]
    return per_question(row, classifier.trait_scores(texts, row.condition.trait) if texts else [])


def build_rows(data: list[RowData], classifier, seed: int) -> list[SweepRow]:
    from training.inventory import paired_difference

    base = {row.condition.trait: row for row in data if row.condition.kind == "base"}
    voices = {row.condition: per_question_voice(row, classifier) for row in data}
    rows = []
    for row in data:
        trait, voice = row.condition.trait, voices[row.condition]
        reference = base.get(trait)
        voice_diff = inventory_diff = None
        if reference is not None and row is not reference:
            against = voices[reference.condition]
            shared = sorted(set(voice) & set(against))
            voice_diff = _interval(paired_mean_difference(np.array([voice[k] for k in shared]),
                                                          np.array([against[k] for k in shared]), seed=seed))
            d = paired_difference(row.inventory, reference.inventory, trait)
            inventory_diff = {"value": d.value, "low": d.low, "high": d.high}
        score = row.inventory.scores[trait]
        emojis = per_question(row, [reply["n_occurrences"] > 0 for reply in row.replies])
        ratio = {k: row.behavior["sentence_ratio"][k] for k in ("value", "low", "high")}
        if ratio["value"] == 0:  # no sentence with an emoji: the bootstrap would say [0, 0]
            ratio["high"] = clopper_pearson(0, len(emojis))[1]
        rows.append(SweepRow(trait, row.condition.label, len(row.replies),
                             _interval(rate(np.array(list(emojis.values())), seed=seed)), ratio,
                             _interval(rate(np.array(list(voice.values())), seed=seed)), voice_diff,
                             {"value": score.mean, "low": score.low, "high": score.high}, inventory_diff,
                             float(row.inventory.answer_mass)))
    return rows


def sweep_rows(root: Path, config: TraitSweepConfig) -> tuple[list[SweepRow], dict[str, Any]]:
    """Every row of ``config`` read from ``root`` and compared; also the classifier's held-out accuracy."""
    from training.trait_classifier import train_classifier

    classifier = train_classifier()
    rows = build_rows([RowData.read(root, c) for c in conditions(config)], classifier, config.seed)
    return rows, {**asdict(classifier.heldout), "l2": classifier.l2, "transfer": asdict(classifier.transfer)}


def _cell(interval: dict[str, float] | None, percent: bool = False, signed: bool = False) -> str:
    if interval is None:
        return "-"
    if percent:
        return f"{interval['value']:.0%} [{interval['low']:.0%}, {interval['high']:.0%}]"
    sign = "+" if signed else ""
    return f"{interval['value']:{sign}.2f} [{interval['low']:{sign}.2f}, {interval['high']:{sign}.2f}]"


HEADER = ("trait", "model", "replies", "emoji rate", "emoji/sentence", "voice", "voice - base", "inventory",
          "inventory - base", "yes/no mass")


def table_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The report's cells (``HEADER``), from ``asdict`` rows (as in ``sweep.json``)."""
    return [[r["trait"], r["condition"], str(r["replies"]), _cell(r["emoji_rate"], percent=True),
             _cell(r["emoji_sentence_ratio"], percent=True), _cell(r["voice"]), _cell(r["voice_vs_base"], signed=True),
             _cell(r["inventory"], signed=True), _cell(r["inventory_vs_base"], signed=True), f"{r['answer_mass']:.2f}"]
            for r in rows]


def figure(rows: list[dict[str, Any]], path: Path) -> Path:
    """Emoji rate, voice and inventory score per trait, one bar per model, with 95% intervals."""
    from interp.report.figures import _save, plt

    traits = list(dict.fromkeys(r["trait"] for r in rows))
    labels = list(dict.fromkeys(r["condition"] for r in rows))
    panels = (("emoji_rate", "emoji rate (sampled replies)"), ("voice", "trait voice per reply (classifier)"),
              ("inventory", "inventory score (keyed log-odds)"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    width = 0.8 / len(labels)
    x = np.arange(len(traits))
    for ax, (key, title) in zip(axes, panels):
        for i, label in enumerate(labels):
            cells = [next((r[key] for r in rows if r["trait"] == t and r["condition"] == label), None) for t in traits]
            values = np.array([c["value"] if c else np.nan for c in cells])
            errors = np.array([[c["value"] - c["low"], c["high"] - c["value"]] if c else [np.nan, np.nan]
                               for c in cells]).T
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, yerr=errors, capsize=2, label=label)
        ax.set_xticks(x, [t[:5] for t in traits])
        ax.set_title(title, fontsize=9)
        ax.axhline(0, color="k", lw=0.6)
    axes[0].legend(fontsize=7)
    return _save(fig, path)
