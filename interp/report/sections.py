"""The report's sections, each from the files one or two stages wrote; nothing is recomputed.

Every number shown carries its interval or its control, and says whether it comes from sampled
replies (the headline) or from the teacher-forced proxy (the wide sweeps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from interp.report import figures
from interp.pages.data import page_filename
from interp.report.blocks import Block, Figure, Heading, Highlighted, Link, Paragraph, Table
from interp.stages import content_hash

BEHAVIOUR_METRICS = ("rate", "sentence_ratio", "mass")


def neuron_columns(design: dict) -> list[str]:
    """The report's neuron-table columns for a design: effect sizes (standardised and d_z), q-values
    and class of every specific contrast, then the change contrast's and the base model's own."""
    columns = ["rank", "layer", "index", "class"]
    for name in design["specific"]:
        columns += [f"{name}_std", f"d_{name}", f"q_{name}"]
    if design.get("change"):
        columns += [f"{design['change']}_std", "fold"]
    columns += [f"{name}_std" for name in design["contrasts"] if name.endswith("_base")]
    return columns


def neuron_cell(out: Path, layer: int, index: int) -> Link | str:
    """``L.N``, linked to its neuron page where the study has one (``interp.pages``)."""
    page = Path("pages") / page_filename(int(layer), int(index))
    return Link(f"L{layer}.N{index}", page.as_posix()) if (out / page).is_file() else f"L{layer}.N{index}"


def read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def skipped(out: Path, stage: str) -> str | None:
    """Why a stage recorded that it measured nothing (``{"skipped": reason}``), or None."""
    record = read(out / "stages" / f"{stage}.json") or {}
    return (record.get("result") or {}).get("skipped")


def num(value: float | None, spec: str = ".2f", scale: float = 1.0, unit: str = "") -> str:
    """A number for prose and tables; "n/a" where JSON holds null (NaN or infinity upstream)."""
    return "n/a" if value is None else f"{scale * value:{spec}}{unit}"


def _pct(estimate: dict[str, float]) -> str:
    return (f"{num(estimate['value'], '.1f', 100)}% [{num(estimate['low'], '.1f', 100)}, "
            f"{num(estimate['high'], '.1f', 100)}]")


def _sci(estimate: dict[str, float]) -> str:
    return f"{num(estimate['value'], '.2e')} [{num(estimate['low'], '.2e')}, {num(estimate['high'], '.2e')}]"


def behaviour(out: Path, fig_dir: Path, summary: dict, blocks: list[Block]) -> None:
    data = {label: read(out / "behavior" / f"{label}.json") for label in ("base", "merged")}
    if not all(data.values()):
        blocks.append(Paragraph("Behaviour was not measured (stage `behavior` missing)."))
        return
    held = {label: next(g for g in b["groups"] if g["name"].startswith("heldout")) for label, b in data.items()}
    summary["behavior"] = {label: {"rate": g["rate"], "sentence_ratio": g["sentence_ratio"],
                                   "mass": g["mass"], "n_prompts": g["n_prompts"],
                                   "n_responses": g["n_responses"]} for label, g in held.items()}
    noun, plural = (behavior := _behavior(out)).noun, behavior.plural
    rows = [[label, g["n_prompts"], g["n_responses"], _pct(g["rate"]), _pct(g["sentence_ratio"]),
             _sci(g["mass"]), " ".join(e for e, _ in g["top"][:5])] for label, g in held.items()]
    blocks += [Heading(f"Behaviour: does the fine-tune use {plural}?"),
               Paragraph("Sampled replies to held-out questions (topics never trained on, in any trait's voice); "
                         "95% cluster-bootstrap intervals over questions."),
               Table(["model", "questions", "replies", f"{noun} rate", f"{noun}/sentence ratio", f"{noun} prob. mass",
                      f"top {plural}"], rows),
               Figure(figures.behaviour_bars(held, BEHAVIOUR_METRICS, fig_dir / "behaviour.png"),
                      "Held-out questions: base vs merged, 95% bootstrap intervals over questions.")]
    samples = out / "behavior" / "merged.generations.jsonl"
    if samples.is_file():
        texts = [json.loads(line) for line in samples.read_text().splitlines()[:4]]
        blocks.append(Table(["question", "merged model's reply"], [[t["prompt"][:80], t["text"][:220]] for t in texts]))


def neurons(out: Path, fig_dir: Path, summary: dict, blocks: list[Block]) -> None:
    diff = read(out / "neurons.json")
    if diff is None or not (out / "neurons.csv").is_file():
        blocks.append(Paragraph("No neuron statistics (stage `diff` missing)."))
        return
    table = pd.read_csv(out / "neurons.csv", keep_default_na=False, na_values=[""], dtype={"class": str})
    config = diff["config"]
    summary["neurons"] = {key: diff[key] for key in ("n_neurons", "counts", "calls", "placebo", "replication",
                                                     "n_prompts")}
    summary["neurons"]["outliers"] = diff["outliers"]
    calls = diff["calls"]
    n = diff["n_neurons"]
    rows = [[name, diff["design"]["contrasts"][name], diff["n_prompts"].get(name, ""),
             *[f"{calls[name].get(call, 0):,}" for call in ("changed", "equivalent", "inconclusive")]]
            for name in calls]
    placebo = diff.get("placebo") or {}
    behavior = _behavior(out)
    noun, plural, name = behavior.noun, behavior.plural, diff["design"].get("name", behavior.condition)
    blocks += [Heading(f"Neurons: which did the fine-tune change, and which for the {plural}?"),
               Paragraph(f"{n:,} neurons, each tested per contrast with a minimum-effect test (H0: |effect| <= "
                         f"{config['delta']} of the neuron's token SD) and TOST equivalence, "
                         f"{config['correction']} across neurons at {config['alpha']}. Activations are averaged over "
                         f"content tokens only (chat template and position 0 excluded); each {noun} text is compared "
                         f"with a twin in which every {noun} became ordinary words of the same token count."),
               Table(["contrast", "what it asks", "prompts", "changed", "equivalent", "inconclusive"], rows)]
    inputs = diff.get("inputs") or {}
    grouped = {c: (inputs["n_prompts"][c], units) for c, units in (inputs.get("n_units") or {}).items()
               if units < inputs.get("n_prompts", {}).get(c, units)}
    if grouped:  # several replies to one question: the question is the unit (interp.stats.loading)
        blocks.append(Paragraph("Prompts read after the same question count once (their values are averaged): "
                                + "; ".join(f"{c}: {rows:,} replies to {units:,} questions"
                                            for c, (rows, units) in grouped.items())
                                + ". The prompts column counts those with tokens in every term's scope."))
    if placebo:
        specific = ", ".join(f"{k}: {v['n_changed']:,} ({100 * v['share']:.2f}%)" for k, v in placebo["specific"].items())
        blocks.append(Paragraph(f"**Placebo** (the same contrast between two independently drawn filler twins, true "
                                f"effect zero): {placebo['n_changed']:,} neurons changed "
                                f"({100 * placebo['share']:.2f}% of all), against {specific} for the real {plural}."))
    null = read(out / "null" / "comparison.json")
    if null:
        from interp.report.null import null_blocks

        summary["null"] = null
        blocks += null_blocks(null, n)
    counts = diff["counts"]
    blocks.append(Paragraph("Classes: " + ", ".join(f"**{k}** {v:,}" for k, v in counts.items()) + ". Flagged = "
                            f"{noun}-specific (reading or writing) and not an outlier; ranked by the larger "
                            "standardised specific effect."))
    for r in diff["replication"]:
        blocks.append(Paragraph(f"Split-half replication ({r['contrast']}): the top {r['n_top']} neurons chosen on "
                                f"one random half of the prompts ({r['n_flagged_a']:,} changed there) keep their sign "
                                f"on the other half in {num(r['sign_agreement'], '.0f', 100, '%')} of cases "
                                f"(correlation {num(r['correlation'])})."))
    if diff["outliers"]:
        blocks.append(Table(["outlier layer", "index", "max |a| / layer median", "position-0 |a| / content max"],
                            [[o["layer"], o["index"], num(o["massive_ratio"], ".0f"), num(o["pos0_ratio"], ".0f")]
                             for o in diff["outliers"]]))
    columns = neuron_columns(diff["design"])
    missing = [c for c in columns if c not in table.columns]
    if missing:  # a column the design promises must never vanish from the report quietly
        raise ValueError(f"neurons.csv lacks columns {missing} of its own design; run the diff stage again")
    top = table[table["flagged"].astype(str) == "True"].sort_values("rank").head(15)
    blocks.append(Table(["neuron", *columns], [[neuron_cell(out, r[1], r[2]), *r] for r in top[columns].values.tolist()]))
    if (out / "pages" / "index.html").is_file():
        blocks.append(Table(["neuron pages"], [[Link("index of the neurons that matter", "pages/index.html")]]))
    layers = sorted(int(layer) for layer in diff["counts_by_layer"])
    per_layer = {name: [int(diff["counts_by_layer"][str(layer)].get(name, 0)) for layer in layers]
                 for name in ("activated", "amplified", "suppressed", "flagged")}
    blocks += [Figure(figures.volcano(table, f"{name}_reading_std", f"q_{name}_reading", fig_dir / "volcano.png",
                                      config["alpha"]),
                      f"{noun.capitalize()}-specific change at the {noun} tokens (standardised) vs -log10 q of the "
                      "minimum-effect test."),
               Figure(figures.layer_counts(per_layer, layers, fig_dir / "layers.png"), "Neurons per layer and class.")]
    examples = read(out / "examples.json") or []
    if examples:
        blocks.append(Paragraph(f"Texts that drive the top flagged neurons hardest (merged model, {noun} texts, "
                                "content tokens); shading = activation relative to the neuron's peak."))
    for example in examples:
        blocks.append(Highlighted(example["label"], example["tokens"], example["weights"]))


def _behavior(out: Path):
    """The study's behaviour (``study.json``), for the causal sections' wording."""
    from activations.behaviors import Behavior
    from training.studies import STUDY_BEHAVIORS

    study = read(out / "study.json") or {}
    return Behavior.parse(study.get("behavior") or STUDY_BEHAVIORS[study.get("study", "injection")])


def causal(out: Path, fig_dir: Path, summary: dict, blocks: list[Block]) -> None:
    from interp.report.verdict import baseline_blocks, criterion, intactness_blocks

    behavior = _behavior(out)
    noun, plural = behavior.noun, behavior.plural
    blocks.append(Heading(f"Causal tests: which neurons make the model write {plural}?"))
    screen = read(out / "causal" / "screen.json")
    sweep = read(out / "causal" / "sweep.json")
    verdict = read(out / "suppression" / "verdict.json")
    if verdict:
        summary["suppression"] = {key: verdict[key] for key in ("behavior", "k", "method", "rate", "cut", "ppl_neutral",
                                                                "kl_neutral", "random_beaten", "checks", "passed",
                                                                "sentence", "n_questions", "samples_per_question",
                                                                "fresh")}
        if verdict.get("intactness"):
            summary["suppression"]["intactness"] = {key: verdict["intactness"][key]
                                                    for key in ("checks", "ruled_out", "sentence")}
        er = verdict["rate"]
        blocks += [Paragraph(f"**Verdict.** {verdict['sentence']}"),
                   Table(["model", f"{noun} rate (sampled)", "neutral perplexity", "neutral KL"],
                         [["merged", _pct(er["merged"]), num(verdict["ppl_neutral"]["merged"]), "0"],
                          ["suppressed (reloaded, no hooks)", _pct(er["suppressed"]),
                           num(verdict["ppl_neutral"]["suppressed"]), num(verdict["kl_neutral"]["suppressed"], ".4f")]]),
                   Table(["criterion", "required", "measured", "met"],
                         [[name, *criterion(name, verdict), "yes" if ok else "NO"]
                          for name, ok in verdict["checks"].items()]),
                   *intactness_blocks(verdict, noun)]
        baselines = read(out / "causal" / "baselines.json")
        if baselines:
            summary["baselines"] = {key: baselines[key] for key in ("standing", "rank", "sentence")}
            blocks += baseline_blocks(baselines, noun)
        elif reason := skipped(out, "baselines"):
            summary["baselines"] = {"skipped": reason}
            blocks.append(Paragraph(f"**Baselines not measured:** {reason}."))
        null = read(out / "null" / "comparison.json")
        if null:  # the statistics' null sits beside the verdict too: the counts are part of its story
            blocks.append(Paragraph(f"**The statistics against a null fine-tune** (table in the neuron section): "
                                    f"{null['sentence']}"))
        others = [read(path) for path in sorted((out / "suppression").glob("verdict-*.json"))]
        if others:
            summary["suppression_by_method"] = {o["method"]: {key: o[key] for key in ("rate", "cut", "ppl_increase",
                                                                                       "kl_neutral", "checks")}
                                                for o in [verdict, *others]}
            blocks += [Paragraph("The same neurons written into the weights another way, sampled with the same "
                                 "questions and random streams (the random-set criterion is the sweep's, measured "
                                 f"for `{verdict['method']}` only):"),
                       Table(["export", f"{noun} rate (sampled)", "cut", "neutral perplexity", "neutral KL",
                              "criteria met (of rate, perplexity, KL)"],
                             [[o["method"], _pct(o["rate"]["suppressed"]),
                               f"{100 * o['cut']['value']:.0f}% [{100 * o['cut']['low']:.0f}, {100 * o['cut']['high']:.0f}]",
                               f"{num(o['ppl_neutral']['suppressed'])} ({100 * o['ppl_increase']:+.1f}%)",
                               num(o["kl_neutral"]["suppressed"], ".4f"),
                               ", ".join(k for k in ("rate_cut", "perplexity", "kl") if o["checks"][k]) or "none"]
                              for o in [verdict, *others]])]
    if screen and screen.get("check"):
        check = screen["check"]
        summary["screen"] = {"check": check, "load_bearing": screen["load_bearing"]}
        random = screen["random"]
        blocks += [Paragraph(f"**Screen** (necessity direction: the merged model's neurons given their base values; "
                             f"metric log P({noun} target tokens) where the merged model started one). On "
                             f"{check['n']} randomly chosen "
                             f"neurons patched exactly (on {check.get('n_contexts', '?')} writing contexts, "
                             f"estimates recomputed on the same), attribution and exact effects have Spearman "
                             f"{num(check['spearman'], '.3f')} (signs agree {num(check['sign_agreement'], '.0f', 100)}%); "
                             f"{check['n_above_threshold']} sampled neuron(s) exceed the 100th-largest estimate "
                             f"(largest at {num(check['max_exact_over_threshold'], '.1f')}x), {check.get('n_missed', '?')} of them "
                             f"ranked below 100 by the screen itself (missed). Load-bearing "
                             f"(single-neuron mean-ablation KL > threshold, kept out): {len(screen['load_bearing'])}."),
                   Figure(figures.attribution_scatter([r["exact_effect"] for r in random],
                                                      [r["patch_estimate"] for r in random], check["spearman"],
                                                      fig_dir / "attribution.png"),
                          "Attribution estimate vs exact patching on the random sample.")]
        if check.get("exceeding"):
            blocks += [Paragraph("Where the screen misses: sampled neurons whose exact effect (change of log "
                                 f"P({noun})) exceeds the 100th-largest estimate, with the rank their estimate got."),
                       Table(["neuron", "estimate", "exact", "exact / threshold", "estimate rank"],
                             [[neuron_cell(out, m["layer"], m["index"]), num(m["patch_estimate"], ".4f"), num(m["exact_effect"], ".4f"),
                               num(abs(m["exact_effect"]) / check["threshold"], ".1f"), m["estimate_rank"]]
                              for m in check["exceeding"]])]
    if sweep:
        summary["sweep"] = {"clean": sweep["clean"], "choice": {k: v for k, v in sweep["choice"].items() if k != "neurons"},
                            "random_beaten": sweep["random_beaten"]}
        tops = [c for c in sweep["conditions"] if c["kind"] == "top"]
        rows = [[c["ranking"], c["intervention"], c["k"], num(c["reduction"], ".1f", 100, "%"),
                 num(c["kl_neutral"], ".4f"), num(c["ppl_neutral"])]
                for c in sorted(tops, key=lambda c: (c["ranking"], c["intervention"], c["k"]))]
        randoms = pd.DataFrame([c for c in sweep["conditions"] if c["kind"] == "random"])
        cloud = []
        if len(randoms):
            for (ranking, k), group in randoms.groupby(["ranking", "k"]):
                cloud.append([ranking, k, len(group), f"{100 * group['reduction'].mean():.1f}%",
                              f"{100 * group['reduction'].min():.1f}% .. {100 * group['reduction'].max():.1f}%",
                              f"{group['kl_neutral'].median():.4f}",
                              num(sweep["random_beaten"].get(f"{ranking}/{k}"), ".0f", 100, "%")])
        blocks += [Paragraph("**Sweep (proxy).** Every top-k set of each ranking under each intervention, and matched "
                             "random sets (same layer and write-norm decile counts, from a pool without flagged or "
                             f"outlier neurons), measured teacher-forced: share of the {noun} target probability removed "
                             f"where the merged model starts {plural}, and KL / perplexity on templated neutral chats. "
                             f"Unedited: {noun} mass {sweep['clean']['mass']:.3f}, perplexity "
                             f"{sweep['clean']['ppl_neutral']:.2f}."),
                   Figure(figures.pareto(sweep["conditions"], sweep["choice"], fig_dir / "pareto.png", noun),
                          f"{noun.capitalize()} mass removed vs neutral KL: rankings (lines, per intervention) against matched "
                          "random sets (grey)."),
                   Table(["ranking", "intervention", "k", f"{noun} mass removed", "neutral KL", "neutral ppl"], rows)]
        if cloud:
            blocks.append(Table(["random sets for", "k", "sets", "mean removed", "range", "median KL",
                                 "top set beats"], cloud))


def where(out: Path, fig_dir: Path, summary: dict, blocks: list[Block]) -> None:
    from interp.report.where import estimator_blocks, steer_blocks, where_blocks

    result = read(out / "causal" / "where.json")
    if result:
        summary["where"] = {"sentence": result["sentence"], "clean": result["clean"],
                            "random_beaten": result["random_beaten"], "n_contexts": result["n_contexts"]}
        blocks += where_blocks(result, fig_dir, _behavior(out).noun, lambda layer, index: neuron_cell(out, layer, index))
        blocks += estimator_blocks(read(out / "causal" / "screen.json") or {})
    steer = read(out / "causal" / "steer.json")
    if steer:
        summary["steer"] = {"sentence": steer["sentence"], "merged_rate": steer["merged_rate"]}
        blocks += steer_blocks(steer, _behavior(out).noun)
    reasons = {stage: reason for stage in ("where", "steer") if not read(out / "causal" / f"{stage}.json")
               and (reason := skipped(out, stage))}
    if reasons:
        summary.update({stage: {"skipped": reason} for stage, reason in reasons.items()})
        blocks += [Heading("Where the change lives: not measured"),
                   *(Paragraph(f"**{stage}:** {reason}.") for stage, reason in reasons.items())]


def separability(out: Path, summary: dict, blocks: list[Block]) -> None:
    from interp.causal.separability import rows_table

    result = read(out / "separability.json")
    if not result:
        return
    summary["separability"] = result
    header, rows = rows_table(result)
    plural = _behavior(out).plural
    blocks += [Heading(f"{plural.capitalize()} vs personality: does the trait stay when the {plural} go?"),
               Paragraph(f"Four models answer the same held-out questions (sampled; the replies column counts them) "
                         f"and the {result['trait']} items of the inventory (keyed log-odds of agreeing; intervals "
                         "take the two keyings as two samples; 'minus merged' is the paired item difference from "
                         "the merged model). The voice per reply is a classifier's probability that a reply is in "
                         "the trait's voice, trained on the project's voice corpus (diaries, messages, reviews... on "
                         "topics no question asks about), never on the answers the fine-tune learned from; emojis are "
                         "removed first and punctuation is a feature. The words-only voice leaves punctuation out, so "
                         "a change only the first sees is a change of style. Accuracy over five traits: "
                         f"{_accuracies(result['classifier'])}. "
                         "The random set is the sweep's first matched random set at the chosen k. "
                         "Base, merged and suppressed replies are the ones sampled for the behaviour section and "
                         "the verdict."),
               Table(header, rows), Paragraph(f"**Reading.** {result['sentence']}")]


def _accuracies(classifiers: dict[str, dict]) -> str:
    pct = lambda a: f"{a['value']:.0%} [{a['low']:.0%}, {a['high']:.0%}] (n={a['n']})"  # noqa: E731
    return "; ".join(f"{name}: {pct(c['heldout'])} on the corpus's held-out topics, {pct(c['transfer'])} on the "
                     "Opinion-QA answers" for name, c in classifiers.items())


def replication(out: Path, summary: dict, blocks: list[Block]) -> None:
    """``interp replicate``'s comparison, when it was run into ``out/replication``, and only while every
    seed file it read still has the hash it recorded (a changed seed makes it stale, not shown)."""
    folder = out / "replication"
    result = read(folder / "replication.json")
    if not result:
        return
    blocks.append(Heading("Replication across training seeds"))
    now = {f"{seed}/{name}": (digest, content_hash(folder / seed / name))
           for seed, files in result.get("inputs", {}).items() for name, digest in files.items()}
    absent = [path for path, (_, current) in now.items() if current is None]
    changed = [path for path, (recorded, current) in now.items() if current is not None and current != recorded]
    if absent and not changed:  # e.g. a fresh clone: the large per-seed outputs are not committed
        blocks.append(Paragraph(f"Not verifiable in this checkout: {len(absent)} seed file(s) it compared are absent "
                                f"(first: {absent[0]}). `interp replicate --out {folder}` recomputes them."))
        return
    if changed or "inputs" not in result:
        blocks.append(Paragraph(f"**Stale:** {', '.join(changed) or 'the recorded inputs'} changed since `interp "
                                "replicate` compared the seeds; rerun it to see the comparison."))
        return
    summary["replication"] = {"findings": result["findings"], "seeds": result["seeds"], "overlaps": result["overlaps"]}
    blocks += replication_blocks(result)


def replication_blocks(result: dict) -> list[Block]:
    """The comparison of ``interp replicate`` (its ``replication.json``) as report blocks: findings,
    one row per seed, one per pair of seeds."""
    def pct(row: dict, key: str) -> str:
        return f"{num(row[key], '.0f', 100)}% [{num(row[key + '_low'], '.0f', 100)}, {num(row[key + '_high'], '.0f', 100)}]"

    return [Paragraph("Each seed is a whole study (fine-tune, behaviour, statistics, causal checks, suppressor) in "
                      "its own directory `seed-N`; a finding replicates when it holds in every seed (overlaps: in "
                      "every pair of seeds, at Jaccard >= 0.5)."),
            Table(["finding", "held (per seed; per pair for overlaps)", "replicates"],
                  [[f["finding"], ", ".join({True: "yes", False: "no", None: "n/a"}[h] for h in f["held"]),
                    "yes" if f["replicates"] else "**NO**"] for f in result["findings"]]),
            Paragraph("Per seed: the merged model's sampled emoji rate on held-out questions (base model's beside it) "
                      "and the suppressor's relative cut of it, with 95% intervals."),
            Table(["seed", "merged emoji rate", "base", "flagged", "split-half top-100 Jaccard", "suppressor k", "cut",
                   "random beaten", "verdict", "stage minutes"],
                  [[r["seed"], pct(r, "emoji_rate"), f"{num(r['base_emoji_rate'], '.0f', 100)}%", f"{r['n_flagged']:,}",
                    num(r["split_half_top100_jaccard"]), r["suppressor_k"], pct(r, "cut"),
                    f"{num(r['random_beaten'], '.0f', 100)}%", "passed" if r["verdict_passed"] else "FAILED",
                    num(r["stage_minutes"], ".1f")] for r in result["seeds"]]),
            Table(["seeds", "flagged Jaccard", "top-100 Jaccard", "suppressor Jaccard"],
                  [[o["seeds"], num(o["flagged_jaccard"]), num(o["top100_jaccard"]), num(o["suppressor_jaccard"])]
                   for o in result["overlaps"]]),
            Paragraph(f"Neurons flagged in every seed: {result['n_in_every_seed']:,}.")]
