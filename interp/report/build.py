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

from activations.atomic_io import write_json_atomic, write_text_atomic
from interp.discover.render import discovery_blocks
from interp.report import sections
from interp.report.blocks import Block, Heading, Paragraph, Table, to_html, to_markdown
from interp.stages import load_records
from interp.study.config import STAGE_NAMES

log = logging.getLogger(__name__)

PACKAGES = ("neurodiff", "torch", "transformers", "peft", "bitsandbytes", "statsmodels", "numpy", "h5py")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _methods(out: Path, records: dict[str, dict], summary: dict, blocks: list[Block]) -> None:
    study = sections.read(out / "study.json") or {}
    diff = sections.read(out / "neurons.json") or {}
    # The report stage is the one running now: a record of it can only be an earlier build's.
    timed = {name: r for name, r in records.items() if name != "report"}
    summary["timings"] = {name: r["seconds"] for name, r in timed.items()}
    summary["timings"]["total"] = round(sum(summary["timings"].values()), 2)
    summary["versions"] = _versions()
    config = diff.get("config", {})
    blocks += [Heading("Methods"),
               Paragraph("Neuron = one input of an MLP output projection (TransformerLens `blocks.L.mlp.hook_post`). "
                         "Per prompt, activations are averaged over its content tokens, or over its marked tokens "
                         "(the behaviour's occurrences, the filler words of its twin, or the token before each place the merged "
                         "model's own reply started it); "
                         "every contrast is a per-prompt difference tested with a minimum-effect test and TOST, "
                         f"corrected across all neurons with {config.get('correction', '?')}. **Headline numbers** "
                         "(behaviour, the verdict) come from sampled replies to held-out questions; **proxy numbers** "
                         "(screen, sweep, random sets) are teacher-forced on the merged model's replies to training "
                         "questions and on neutral chats, which the verdict never uses."),
               Table(["setting", "value"], [[k, json.dumps(v)] for k, v in study.items()]),
               Table(["statistics setting", "value"],
                     [[k, json.dumps(v)] for k, v in config.items() if k not in ("classify", "outliers")]
                     + [[f"classes.{k}", json.dumps(v)] for k, v in config.get("classify", {}).items()]
                     + [[f"outliers.{k}", json.dumps(v)] for k, v in config.get("outliers", {}).items()]),
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
    study = sections.read(out / "study.json") or {}
    records = load_records(out, STAGE_NAMES)
    fig_dir = out / "figures"
    summary: dict[str, Any] = {"study": study.get("study"), "trait": study.get("trait"), "model": study.get("model"),
                               "quick": study.get("quick", False)}
    title = f"neurodiff study: {study.get('study')} / {study.get('trait')} on {study.get('model')}"
    blocks: list[Block] = []
    if study.get("quick"):
        blocks.append(Paragraph("**QUICK RUN**: fewer training steps, prompts and samples. A smoke test, not a result."))
    sections.behaviour(out, fig_dir, summary, blocks)
    sections.neurons(out, fig_dir, summary, blocks)
    sections.causal(out, fig_dir, summary, blocks)
    sections.separability(out, summary, blocks)
    sections.where(out, fig_dir, summary, blocks)
    sections.replication(out, summary, blocks)
    discovered = sections.read(out / "discovery" / "discovery.json")  # `interp discover --out STUDY/discovery`
    if discovered:
        blocks += discovery_blocks(discovered)
    _methods(out, records, summary, blocks)
    html_path, md_path, json_path = out / "report.html", out / "report.md", out / "summary.json"
    write_text_atomic(html_path, to_html(title, blocks))
    write_text_atomic(md_path, to_markdown(title, blocks, out))
    write_json_atomic(json_path, summary)
    log.info("report written to %s", html_path)
    return [html_path, md_path, json_path]
