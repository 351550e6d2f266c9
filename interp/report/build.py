"""Build the study report from the files a study directory holds; nothing is recomputed.

Writes ``report.html`` (self-contained, figures inlined), ``report.md``, ``summary.json`` and
``figures/*.png``. Stages that did not run (or were skipped) are reported as missing, not guessed.
"""

from __future__ import annotations

import json
import logging
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from interp.report import figures
from interp.report.blocks import Block, Figure, Heading, Highlighted, Paragraph, Table, to_html, to_markdown
from interp.causal.results import write_json, write_text
from interp.study.stages import load_records

log = logging.getLogger(__name__)

STAGE_ORDER = ("train", "merge", "behavior", "cache", "diff", "examples", "ablate", "patch", "attribute", "report")
BEHAVIOUR_METRICS = ("emoji_rate", "emoji_sentence_ratio", "emoji_mass")
PACKAGES = ("neurodiff", "torch", "transformers", "peft", "bitsandbytes", "statsmodels", "numpy", "h5py")


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(estimate: dict[str, float]) -> str:
    return f"{100 * estimate['value']:.1f}% [{100 * estimate['low']:.1f}, {100 * estimate['high']:.1f}]"


def _sci(estimate: dict[str, float]) -> str:
    return f"{estimate['value']:.2e} [{estimate['low']:.2e}, {estimate['high']:.2e}]"


def _heldout(behavior: dict[str, Any]) -> dict[str, Any]:
    return next(g for g in behavior["groups"] if g["name"].startswith("heldout"))


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _behaviour(out: Path, fig_dir: Path, summary: dict, blocks: list[Block]) -> None:
    behavior = {label: _read(out / "behavior" / f"{label}.json") for label in ("base", "merged")}
    if not all(behavior.values()):
        blocks.append(Paragraph("Behaviour was not measured (stage `behavior` missing)."))
        return
    held = {label: _heldout(b) for label, b in behavior.items()}
    summary["behavior"] = {label: {"emoji_rate": g["emoji_rate"]["value"],
                                   "ci": [g["emoji_rate"]["low"], g["emoji_rate"]["high"]],
                                   "emoji_sentence_ratio": g["emoji_sentence_ratio"],
                                   "emoji_mass": g["emoji_mass"], "n_responses": g["n_responses"]}
                           for label, g in held.items()}
    rows = [[label, g["n_responses"], _pct(g["emoji_rate"]), _pct(g["emoji_sentence_ratio"]), _sci(g["emoji_mass"]),
             " ".join(e for e, _ in g["top_emojis"][:5])] for label, g in held.items()]
    blocks += [Heading("Behaviour: does the fine-tune use emojis?"),
               Table(["model", "responses", "emoji rate", "emoji/sentence ratio", "emoji prob. mass", "top emojis"],
                     rows),
               Figure(figures.behaviour_bars(held, BEHAVIOUR_METRICS, fig_dir / "behaviour.png"),
                      "Held-out questions: base vs merged, 95% bootstrap intervals over questions.")]
    samples = out / "behavior" / "merged.generations.jsonl"
    if samples.is_file():
        texts = [json.loads(line) for line in samples.read_text().splitlines()[:4]]
        blocks.append(Table(["question", "merged model's reply"], [[t["prompt"][:80], t["text"][:220]] for t in texts]))


def _neurons(out: Path, fig_dir: Path, summary: dict, blocks: list[Block]) -> None:
    diff = _read(out / "neurons.json")
    if diff is None:
        blocks.append(Paragraph("No neuron statistics (stage `diff` missing)."))
        return
    table = pd.read_csv(out / "neurons.csv")
    summary["neurons"] = {"counts": diff["counts"], "n_neurons": diff["n_neurons"], "tests": diff["tests"]}
    layers = sorted(int(layer) for layer in diff["counts_by_layer"])
    per_layer = {name: [int(diff["counts_by_layer"][str(l) if str(l) in diff["counts_by_layer"] else l].get(name, 0))
                        for l in layers] for name in diff["counts"]}
    tests = diff["tests"]
    rows = [[name, t.get("n_uncorrected", ""), t.get("n_corrected", ""), t.get("description", "")]
            for name, t in tests.items()]
    blocks += [Heading("Neurons: which did the fine-tune change?"),
               Paragraph(f"{diff['n_neurons']:,} neurons tested. Class counts: "
                         + ", ".join(f"**{k}** {v:,}" for k, v in diff["counts"].items()) + "."),
               Table(["test", "p < alpha (uncorrected)", "q < alpha (corrected)", "what it asks"], rows),
               Figure(figures.volcano(table, "interaction", "q_interaction", fig_dir / "volcano.png"),
                      "Interaction (merged - base on emoji texts minus the same on their twins) vs -log10 q."),
               Figure(figures.layer_counts(per_layer, layers, fig_dir / "layers.png"),
                      "Flagged neurons per layer and class.")]
    columns = [c for c in ("layer", "index", "class", "interaction", "q_interaction", "d_change_emoji",
                           "log2fc_emoji", "base_emoji_abs", "merged_emoji_abs") if c in table.columns]
    top = table.head(15)[columns]
    blocks.append(Table(columns, top.values.tolist()))
    examples = _read(out / "examples.json") or []
    if examples:
        blocks.append(Paragraph("Prompts that drive the top neurons hardest (merged model, emoji set); "
                                "shading = activation relative to the neuron's peak."))
    for example in examples:
        blocks.append(Highlighted(example["label"], example["tokens"], example["weights"]))


def _causal(out: Path, fig_dir: Path, summary: dict, blocks: list[Block]) -> None:
    dose = _read(out / "ablation" / "dose_response.json")
    blocks.append(Heading("Causal tests: do these neurons cause the emojis?"))
    if dose:
        summary["ablation"] = {"baseline": dose["baseline"], "mode": dose["config"]["mode"],
                               "per_k": [{"k": p["k"], "flagged": p["flagged"], "random": p["random"]}
                                         for p in dose["points"]]}
        metrics = [m for m in ("emoji_rate", "emoji_mass") if m in dose["baseline"]]
        for metric in metrics:
            blocks.append(Figure(figures.dose_response(dose, metric, fig_dir / f"dose_{metric}.png"),
                                 f"Ablating the top-k flagged neurons of the merged model ({dose['config']['mode']}) "
                                 f"vs {dose['config']['n_random']} matched random sets per k: {metric}."))
        # side effects on neutral prompts: "suppressing emojis" must not be "breaking the model"
        side = [m for m in ("ppl_neutral", "kl_neutral") if m in dose["baseline"]]
        header = ["k", *[f"{m} flagged" for m in metrics], *[f"{m} random (mean [95%])" for m in metrics],
                  *[f"{m} flagged" for m in side], *[f"{m} random (mean)" for m in side]]
        rows = [[p["k"], *[p["flagged"].get(m) for m in metrics],
                 *[f"{p['random'][m]['mean']:.3g} [{p['random'][m]['low']:.3g}, {p['random'][m]['high']:.3g}]"
                   for m in metrics], *[p["flagged"].get(m, "") for m in side],
                 *[p["random"][m]["mean"] if m in p["random"] else "" for m in side]] for p in dose["points"]]
        blocks += [Paragraph("No ablation: " + ", ".join(f"{k} {v:.4g}" for k, v in dose["baseline"].items())),
                   Table(header, rows)]
    patch = _read(out / "patching" / "patching.json")
    if patch:
        summary["patching"] = {"base": patch["base"], "merged": patch["merged"], "points": patch["points"]}
        shown = ("emoji_rate", "emoji_mass", "ppl_neutral", "kl_neutral")
        rows = [["base (clean)", "", *[patch["base"].get(m) for m in shown], ""],
                ["merged (clean)", "", *[patch["merged"].get(m) for m in shown], ""]]
        for p in patch["points"]:
            for direction, label in (("sufficiency", "base <- merged"), ("necessity", "merged <- base")):
                recovered = p[f"{direction}_recovered"].get("emoji_mass")
                rows.append([label, p["k"], *[p[direction].get(m) for m in shown],
                             "" if recovered is None else round(recovered, 3)])
        blocks += [Paragraph("Patching: **sufficiency** (base <- merged) gives the base model the merged model's values "
                             "of the top-k flagged neurons; **necessity** (merged <- base) gives the merged model the "
                             "base values, on the same tokens at every step. Recovered = (patched - base) / "
                             "(merged - base) of the emoji mass: for sufficiency 1 = the neurons carry the whole difference, for "
                             "necessity 0 = giving them base values removes it."),
                   Table(["condition", "k", *shown, "emoji mass recovered"], rows)]
    attribution = _read(out / "attribution" / "attribution.json")
    if attribution and attribution.get("check"):
        check = attribution["check"]
        summary["attribution"] = {k: check[k] for k in ("spearman", "sign_agreement", "speedup",
                                                        "seconds_attribution", "seconds_exact_per_neuron")}
        blocks += [Figure(figures.attribution_scatter(check["exact"], check["estimates"], check["spearman"],
                                                      fig_dir / "attribution.png"),
                          f"Attribution patching vs exact patching on the top {len(check['exact'])} neurons; "
                          f"one pass for all {check['n_neurons_total']:,} neurons is ~{check['speedup']:.0f}x faster "
                          "than exact patching of each (extrapolated).")]


def _methods(out: Path, records: dict[str, dict], summary: dict, blocks: list[Block]) -> None:
    study = _read(out / "study.json") or {}
    diff = _read(out / "neurons.json") or {}
    # The report stage is the one running now: a record of it can only be an earlier build's.
    timed = {name: r for name, r in records.items() if name != "report"}
    summary["timings"] = {name: r["seconds"] for name, r in timed.items()}
    summary["timings"]["total"] = round(sum(summary["timings"].values()), 2)
    summary["versions"] = _versions()
    blocks += [Heading("Methods"),
               Paragraph("Neuron = one input of an MLP output projection (TransformerLens `blocks.L.mlp.hook_post`), "
                         "activation averaged over a prompt's real tokens. The core test is the 2x2 interaction "
                         "model x emoji by OLS on prompt-level observations with per-prompt effects; p-values are "
                         f"corrected across all neurons with {diff.get('config', {}).get('correction', '?')}."),
               Table(["setting", "value"], [[k, json.dumps(v)] for k, v in study.items()]),
               Table(["classification setting", "value"],
                     [[k, json.dumps(v)] for k, v in diff.get("config", {}).get("classify", {}).items()]),
               Table(["stage", "seconds", "finished"], [[n, r["seconds"], r["finished"]] for n, r in timed.items()]
                     + [["total", summary["timings"]["total"], ""]]),
               Table(["package", "version"], list(summary["versions"].items()))]
    train = records.get("train", {}).get("result", {})
    merge = records.get("merge", {}).get("result", {})
    summary["hashes"] = {"data": train.get("data_hash"), "base_weights": merge.get("base_fingerprint"),
                         "merged_weights": merge.get("merged_fingerprint")}
    blocks.append(Paragraph("Hashes: " + ", ".join(f"{k} `{v}`" for k, v in summary["hashes"].items())))


def build_report(out: str | Path) -> list[Path]:
    """Write the report files into ``out`` (a study directory); returns their paths."""
    out = Path(out)
    if not (out / "stages").is_dir():
        raise FileNotFoundError(f"{out} holds no study (no stages/ folder); run `interp run --out {out}` first")
    study = _read(out / "study.json") or {}
    records = load_records(out, STAGE_ORDER)
    fig_dir = out / "figures"
    summary: dict[str, Any] = {"study": study.get("study"), "trait": study.get("trait"), "model": study.get("model"),
                               "quick": study.get("quick", False)}
    title = f"neurodiff study: {study.get('study')} / {study.get('trait')} on {study.get('model')}"
    blocks: list[Block] = []
    if study.get("quick"):
        blocks.append(Paragraph("**QUICK RUN**: fewer training steps, prompts and samples. A smoke test, not a result."))
    _behaviour(out, fig_dir, summary, blocks)
    _neurons(out, fig_dir, summary, blocks)
    _causal(out, fig_dir, summary, blocks)
    _methods(out, records, summary, blocks)
    html_path, md_path, json_path = out / "report.html", out / "report.md", out / "summary.json"
    write_text(html_path, to_html(title, blocks), overwrite=True)
    write_text(md_path, to_markdown(title, blocks, out), overwrite=True)
    write_json(json_path, summary, overwrite=True)
    log.info("report written to %s", html_path)
    return [html_path, md_path, json_path]
