"""Replication across training seeds: which findings survive a different fine-tune?

Every number of one study comes from one training run. ``replicate`` runs the whole study once per
seed (each in ``DIR/seed-N``, each resumable and content-fingerprinted like ``interp run``; the seed
changes the fine-tune's initialisation and data order, the sampled replies, the prompt halves and the
random neuron sets) and then compares the seeds:

- behaviour: the merged model's emoji rate per seed, with its interval;
- neurons: how many are flagged per seed, and the Jaccard overlap of the flagged sets and of the
  top-100 sets between every pair of seeds; within a seed, the Jaccard overlap of the top-100 on two
  disjoint halves of the prompts (``{contrast}_std_a`` / ``_b`` of the neuron table);
- causality: the suppression verdict of each seed, and the overlap of the chosen sets.

A finding *replicates* when it holds in every seed (overlap findings: in every pair, at Jaccard >=
0.5, i.e. two thirds of two equal-sized sets shared). ``Replication.findings()`` lists each with
that mark, and ``save`` writes ``replication.json`` and ``replication.md`` into ``DIR``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from activations.atomic_io import write_json_atomic, write_text_atomic
from interp.report.blocks import to_markdown
from interp.report.sections import replication_blocks
from interp.study.config import StudyConfig
from interp.study.pipeline import run_study
from interp.stages import content_hash

log = logging.getLogger(__name__)

TOP = 100
READS = ("summary.json", "neurons.csv", "neurons.json", "suppression/verdict.json")
"""The files of a seed's study the comparison reads; their hashes go into replication.json so that a
report can refuse a comparison whose seeds have changed since."""


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; NaN when both are empty (nothing to agree on)."""
    union = a | b
    return len(a & b) / len(union) if union else float("nan")


def _pairs(frame: pd.DataFrame) -> frozenset[tuple[int, int]]:
    """The (layer, index) of every row."""
    return frozenset(zip(frame["layer"].astype(int), frame["index"].astype(int)))


def _top_by(table: pd.DataFrame, column: str, eligible: np.ndarray, n: int) -> frozenset[tuple[int, int]]:
    values = np.abs(np.nan_to_num(table[column].to_numpy()))
    order = np.flatnonzero(eligible)[np.argsort(-values[eligible], kind="stable")[:n]]
    return _pairs(table.iloc[order])


@dataclass(frozen=True)
class SeedResult:
    """What one seed's study found (read back from its directory)."""

    seed: int
    out: Path
    emoji_rate: dict[str, Any]
    """Merged model's sampled emoji rate on held-out questions: value, low, high."""
    base_rate: dict[str, Any]
    flagged: frozenset
    top: frozenset
    """The top ``TOP`` flagged neurons by rank."""
    split_half_jaccard: float
    """Jaccard overlap of the top-100 (by |effect|, outliers excluded) on two disjoint prompt halves."""
    verdict: dict[str, Any] | None
    seconds: float
    """The seed's recorded stage time (a fresh seed is skipped in seconds, so not this call's)."""

    @classmethod
    def read(cls, seed: int, out: Path) -> SeedResult:
        summary = json.loads((out / "summary.json").read_text())
        table = pd.read_csv(out / "neurons.csv", keep_default_na=False, na_values=[""], dtype={"class": str})
        flagged = table[table["flagged"].to_numpy(bool)]
        contrast = json.loads((out / "neurons.json").read_text())["design"]["specific"][0]
        eligible = ~table["outlier"].to_numpy(bool)
        halves = jaccard(_top_by(table, f"{contrast}_std_a", eligible, TOP),
                         _top_by(table, f"{contrast}_std_b", eligible, TOP))
        behavior = summary.get("behavior", {})
        verdict_path = out / "suppression" / "verdict.json"  # the summary's copy leaves out the neurons
        verdict = json.loads(verdict_path.read_text()) if verdict_path.is_file() else summary.get("suppression")
        return cls(seed, out, behavior.get("merged", {}).get("rate", {}),
                   behavior.get("base", {}).get("rate", {}), _pairs(flagged),
                   _pairs(flagged.sort_values("rank").head(TOP)), halves,
                   verdict, float(summary.get("timings", {}).get("total", float("nan"))))


@dataclass(frozen=True)
class Replication:
    """The seeds side by side; ``table`` has one row per seed, ``overlaps`` one per pair."""

    config: StudyConfig
    seeds: tuple[SeedResult, ...]

    @property
    def table(self) -> pd.DataFrame:
        rows = []
        for s in self.seeds:
            v = s.verdict or {}
            rows.append({"seed": s.seed, "emoji_rate": s.emoji_rate.get("value"), "emoji_rate_low": s.emoji_rate.get("low"),
                         "emoji_rate_high": s.emoji_rate.get("high"), "base_emoji_rate": s.base_rate.get("value"),
                         "n_flagged": len(s.flagged), "split_half_top100_jaccard": s.split_half_jaccard,
                         "suppressor_k": v.get("k"), "cut": (v.get("cut") or {}).get("value"),
                         "cut_low": (v.get("cut") or {}).get("low"), "cut_high": (v.get("cut") or {}).get("high"),
                         "random_beaten": v.get("random_beaten"), "verdict_passed": v.get("passed"),
                         "stage_minutes": s.seconds / 60})
        return pd.DataFrame(rows)

    @property
    def overlaps(self) -> pd.DataFrame:
        rows = []
        for a, b in itertools.combinations(self.seeds, 2):
            chosen = [{tuple(n) for n in ((s.verdict or {}).get("neurons") or [])} for s in (a, b)]
            rows.append({"seeds": f"{a.seed}-{b.seed}", "flagged_jaccard": jaccard(set(a.flagged), set(b.flagged)),
                         "top100_jaccard": jaccard(set(a.top), set(b.top)),
                         "suppressor_jaccard": jaccard(*chosen)})
        return pd.DataFrame(rows)

    def in_every_seed(self) -> set[tuple[int, int]]:
        """Neurons flagged in every seed."""
        return set.intersection(*(set(s.flagged) for s in self.seeds)) if self.seeds else set()

    def findings(self) -> list[dict[str, Any]]:
        """Each headline finding with, per seed, whether it held, and ``replicates`` = all of them."""
        def entry(name: str, held: list[bool | None]) -> dict[str, Any]:
            return {"finding": name, "held": held, "replicates": bool(held) and all(h is True for h in held)}

        overlaps = self.overlaps
        return [
            entry("the fine-tune makes the model use emojis (merged rate's interval above the base rate)",
                  [s.emoji_rate.get("low") is not None and s.emoji_rate["low"] > (s.base_rate.get("high") or 0)
                   for s in self.seeds]),
            entry("the fine-tune flags emoji-specific neurons", [len(s.flagged) > 0 for s in self.seeds]),
            entry("the top-100 neurons replicate on held-out prompts (split-half Jaccard >= 0.5)",
                  [bool(s.split_half_jaccard >= 0.5) for s in self.seeds]),
            entry("the same top-100 neurons come out of every seed (pairwise Jaccard >= 0.5)",
                  [bool(j >= 0.5) for j in overlaps["top100_jaccard"]] if len(overlaps) else []),
            entry("the suppressor passes every criterion of its verdict",
                  [(s.verdict or {}).get("passed") for s in self.seeds]),
            entry("the suppressors are the same neurons (pairwise Jaccard >= 0.5)",
                  [None if np.isnan(j) else bool(j >= 0.5) for j in overlaps["suppressor_jaccard"]]
                  if len(overlaps) else []),
        ]

    def to_dict(self, root: Path | None = None) -> dict[str, Any]:
        inputs = {str(s.out.relative_to(root) if root else s.out): {name: content_hash(s.out / name) for name in READS}
                  for s in self.seeds}
        return {"config": dataclasses.asdict(self.config), "inputs": inputs, "seeds": self.table.to_dict(orient="records"),
                "overlaps": self.overlaps.to_dict(orient="records"), "n_in_every_seed": len(self.in_every_seed()),
                "findings": self.findings()}

    def markdown(self) -> str:
        seeds = ", ".join(str(s.seed) for s in self.seeds)
        return to_markdown(f"Replication across training seeds {seeds}", replication_blocks(self.to_dict()), Path("."))

    def save(self, out: str | Path) -> None:
        out = Path(out)
        write_json_atomic(out / "replication.json", self.to_dict(root=out))
        write_text_atomic(out / "replication.md", self.markdown())


def replicate(config: StudyConfig, out: str | Path, seeds: Sequence[int], *,
              force: tuple[str, ...] = ()) -> Replication:
    """Run (or resume) the study once per seed into ``out/seed-N``, then compare the seeds."""
    if len(set(seeds)) < 2:
        raise ValueError(f"replication needs at least two different seeds, got {list(seeds)}")
    out = Path(out)
    results = []
    for seed in seeds:
        folder = out / f"seed-{seed}"
        log.info("replication: seed %d into %s", seed, folder)
        run_study(dataclasses.replace(config, seed=seed), folder, force=force)
        results.append(SeedResult.read(seed, folder))
    replication = Replication(config, tuple(results))
    replication.save(out)
    return replication
