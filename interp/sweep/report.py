"""The sweep's report: one table, one figure, the in-context neuron overlap, and what they say.

Written from the stage outputs alone (``interp.sweep.pipeline``): ``sweep.json`` (every number),
``sweep.csv`` (one row per model), ``sweep.md`` and ``report.html`` (the same blocks), and
``figures/sweep.png``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pandas as pd

from activations.atomic_io import write_json_atomic, write_text_atomic
from interp.report.blocks import Block, Figure, Heading, Paragraph, Table, to_html, to_markdown
from interp.stages import load_record
from interp.sweep.config import TraitSweepConfig
from interp.sweep.table import HEADER, figure, sweep_rows, table_cells

TITLE = "Five traits, fine-tuned and prompted"


def _timings(out: Path) -> dict[str, float]:
    seconds = {}
    for path in sorted((out / "stages").glob("*.json")):
        record = load_record(out, path.stem)
        if record and path.stem != "report":
            seconds[path.stem] = float(record.get("seconds", 0.0))
    return seconds


def _excludes_zero(interval: dict[str, float] | None) -> bool:
    return interval is not None and (interval["low"] > 0 or interval["high"] < 0)


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per kind of model: how many traits it moved, on which measure."""
    sentences = []
    for label in dict.fromkeys(r["condition"] for r in rows if r["condition"] != "base"):
        mine = [r for r in rows if r["condition"] == label]
        emojis = [r["trait"] for r in mine if r["emoji_rate"]["low"] > 0]
        voice_up = [r["trait"] for r in mine if _excludes_zero(r["voice_vs_base"]) and r["voice_vs_base"]["value"] > 0]
        inventory = [f"{r['trait']} ({r['inventory_vs_base']['value']:+.2f})" for r in mine
                     if _excludes_zero(r["inventory_vs_base"])]
        sentences.append(
            f"**{label}**: emojis in {len(emojis)} of {len(mine)} traits' replies (rate's interval above 0"
            f"{': ' + ', '.join(emojis) if emojis else ''}); the reply voice moved towards the trait in "
            f"{len(voice_up)} of {len(mine)} (paired interval above 0); the inventory moved in {len(inventory)} of "
            f"{len(mine)}{': ' + ', '.join(inventory) if inventory else ''}.")
    return sentences


def neuron_blocks(result: dict[str, Any]) -> list[Block]:
    sets = [[s["name"], s["contrast"], s["n_flagged"], s["n_outliers"],
             f"{s['replication'].get('sign_agreement', float('nan')):.2f}" if s["replication"] else "-"]
            for s in result["sets"]]
    pairs = []
    for o in result["overlaps"]:
        direction = o["same_direction"]
        pairs.append([o["first"], o["second"], o["n_first"], o["n_second"], o["n_shared"], f"{o['jaccard']:.3f}",
                      f"{o['expected_shared']:.1f}", f"{o['fold_enrichment']:.2f}",
                      f"{o['p_enrichment']:.2g}" if o["p_enrichment"] > 0 else "< 1e-300",
                      "-" if direction is None else
                      f"{direction['value']:.0%} [{direction['low']:.0%}, {direction['high']:.0%}]"])
    return [
        Heading(f"Neurons: does prompting recruit the fine-tune's neurons? ({result['trait']})", 3),
        Paragraph("Each diff tests every MLP neuron's mean activation over the held-out questions' own tokens "
                  "(template, demonstrations and position 0 left out): a fine-tune as merged minus base on the plain "
                  "chat, the in-context prompt as the base model with minus without the demonstrations, paired by "
                  "question. Same minimum-effect tests, correction and outlier exclusion as the study. Overlaps are "
                  f"counted within the {result['n_universe']:,} neurons no diff calls an outlier; 'expected' is the "
                  "overlap of two random sets of the same sizes (hypergeometric). The prompted question sits after "
                  "some 400 more tokens of context, so the in-context diff holds whatever a longer chat changes, not "
                  "only the demonstrations' voice; and some neurons change under almost any fine-tune. Hence two "
                  "matched controls from another trait, on the same questions: its demonstrations (same shots, a "
                  "context of about the same length) and its fine-tune (same recipe)."),
        Table(["diff", "contrast", "flagged", "outliers", "split-half sign agreement"], sets),
        Table(["set A", "set B", "A", "B", "shared", "Jaccard", "expected shared", "fold", "p (enrichment)",
               "same direction"], pairs),
        *([Paragraph(sentence)] if (sentence := neuron_sentence(result)) else []),
    ]


def neuron_sentence(result: dict[str, Any]) -> str | None:
    """The comparison that decides the question: the trait's demonstrations against its fine-tune,
    next to the two matched controls (``interp.sweep.neurons``)."""
    trait, other = result["trait"], result.get("control_trait")
    sets = {s["name"]: s for s in result["sets"]}
    study = next((n.split(": ")[1].split(" (")[0] for n in sets if n.startswith("fine-tuned")), None)
    shown = next((n.split(": ")[1].split(" (")[0] for n in sets if n.startswith("in-context")), None)
    if other is None or study is None or shown is None:
        return None
    pairs = {(o["first"], o["second"]): o for o in result["overlaps"]}
    pairs.update({(b, a): o for (a, b), o in list(pairs.items())})
    tuned, prompted = f"fine-tuned: {study} ({trait})", f"in-context: {shown} ({trait})"
    wanted = [(tuned, prompted, f"{trait}'s demonstrations"),
              (tuned, f"in-context: {shown} ({other}, control)", f"{other}'s demonstrations (control)"),
              (f"fine-tuned: {study} ({other}, control)", prompted, f"{other}'s fine-tune vs {trait}'s demonstrations "
                                                                    "(control)")]
    parts = []
    for a, b, label in wanted:
        o = pairs.get((a, b))
        if o is None:
            return None
        parts.append(f"{label}: Jaccard {o['jaccard']:.3f}, {o['fold_enrichment']:.2f}x chance, same direction "
                     f"{(o['same_direction'] or {}).get('value', float('nan')):.0%}")
    return (f"**Reading.** Overlap with {trait}'s {study} fine-tune on {trait}'s questions. " + "; ".join(parts[:2]) +
            f". And {parts[2]}. Prompting recruits the fine-tune's neurons for the trait only as far as the first "
            "exceeds both controls.")


def write_report(out: str | Path, config: TraitSweepConfig) -> list[Path]:
    """Every output of the module docstring, from the stage outputs in ``out``."""
    out = Path(out)
    rows, classifier = sweep_rows(out, config)
    records = [dataclasses.asdict(r) for r in rows]
    neurons = [json.loads((out / "neurons" / t / "overlap.json").read_text()) for t in config.neuron_traits]
    timings = _timings(out)
    brief = [{**n, "sets": [{k: v for k, v in s.items() if k not in ("neurons", "effects")} for s in n["sets"]]}
             for n in neurons]  # the flagged neurons themselves stay in neurons/T/overlap.json
    summary = {"config": dataclasses.asdict(config), "rows": records, "classifier": classifier, "neurons": brief,
               "findings": findings(records), "stage_seconds": timings, "total_minutes": sum(timings.values()) / 60}
    paths = [out / "sweep.json", out / "sweep.csv", out / "sweep.md", out / "report.html", out / "figures" / "sweep.png"]
    write_json_atomic(paths[0], summary)
    write_text_atomic(paths[1], pd.json_normalize(records).to_csv(index=False))
    figure(records, paths[4])
    blocks: list[Block] = [
        Paragraph(f"Settings: {config.train_steps} training steps per fine-tune (batch 8), {config.samples} sampled "
                  f"replies to each held-out question per model ({config.max_new_tokens} new tokens), "
                  f"{config.shots} demonstrations in context, seed {config.seed}, model {config.model}. "
                  f"Stage time {summary['total_minutes']:.1f} min."),
        Paragraph("Emoji rate and emoji/sentence ratio: sampled replies, cluster bootstrap over questions. Voice: the "
                  "probability a reply is in the trait's voice by a classifier trained on the project's voice corpus, "
                  "never on the Opinion-QA answers the fine-tunes learn from (accuracy on the corpus's held-out topics "
                  f"{classifier['value']:.1%} [{classifier['low']:.1%}, {classifier['high']:.1%}], n={classifier['n']}; "
                  f"on the Opinion-QA answers {classifier['transfer']['value']:.1%} [{classifier['transfer']['low']:.1%}, "
                  f"{classifier['transfer']['high']:.1%}], n={classifier['transfer']['n']}; emojis removed before "
                  "scoring, punctuation a feature). Inventory: the "
                  "trait's 12 items, keyed log-odds of agreeing, interval over items by keying group. '- base': paired "
                  "by question (voice) or by item (inventory) against the same trait's base model. Every interval is 95%."),
        Table(HEADER, table_cells(records)),
        Figure(paths[4], "Per trait: emoji rate, reply voice and inventory score of each model (95% intervals)."),
        Heading("What the table says", 3),
        *[Paragraph(sentence) for sentence in summary["findings"]],
    ]
    for result in neurons:
        blocks += neuron_blocks(result)
    write_text_atomic(paths[2], to_markdown(TITLE, blocks, out))
    write_text_atomic(paths[3], to_html(TITLE, blocks))
    return paths
