"""The study files a page reads: ``neurons.csv`` (every contrast), ``causal/screen.{json,csv}`` and
``causal/sweep.json``; and which neurons matter enough for a page of their own.

A page names only what the study measured: a neuron the screen never checked has no exact effect,
and a study without a causal stage has no causal numbers at all.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interp.pages.data import CausalNumbers, ContrastStat

Neuron = tuple[int, int]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def diff_rank(row: pd.Series) -> int | None:
    """The diff's rank (1 = first flagged); None for neurons it did not rank (stored as 0)."""
    rank = _number(row.get("rank"))
    return int(rank) if rank is not None and rank > 0 else None


def neuron_class(row: pd.Series) -> str:
    value = row.get("class")
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


@dataclass(frozen=True)
class IndexLimits:
    """How many neurons of each kind the index lists (the chosen set and the outliers are always whole)."""

    flagged: int = 200
    """The top flagged neurons by rank."""
    screen: int = 100
    """The screen's top neurons by |patch estimate|."""
    per_class: int = 50
    """The top neurons of each class by rank."""

    def __post_init__(self) -> None:
        if min(self.flagged, self.screen, self.per_class) < 0:
            raise ValueError(f"index limits must be >= 0, got {self}")


class StudyFiles:
    """The neuron-level files of one study directory, read once."""

    def __init__(self, study_dir: str | Path) -> None:
        self.dir = Path(study_dir)
        path = self.dir / "neurons.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; neuron pages need a study's diff: run `interp run --out "
                                    f"{self.dir}` (or `interp diff`) first")
        table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"class": str})
        self.table = table.set_index(["layer", "index"], drop=False).sort_index()
        self.contrasts = [c[len("call_"):] for c in table.columns if c.startswith("call_")]
        self.screen = _read_json(self.dir / "causal" / "screen.json") or {}
        screen_csv = self.dir / "causal" / "screen.csv"
        self.screen_table = (pd.read_csv(screen_csv).set_index(["layer", "index"]).sort_index()
                             if screen_csv.is_file() else None)
        self.sweep = _read_json(self.dir / "causal" / "sweep.json") or {}
        self.chosen: list[Neuron] = [(int(a), int(b)) for a, b in (self.sweep.get("choice") or {}).get("neurons", [])]
        self.screen_order: list[Neuron] = [(int(a), int(b)) for a, b in self.screen.get("ranking_head", [])]
        where = _read_json(self.dir / "causal" / "where.json") or {}
        noising = [r for r in where.get("rows", []) if r["direction"] == "noising"]
        self.leave_one_out = {(r["layer"], r["index"]): r["share"] for r in noising if r["family"] == "leave-one-out"}
        self.set_share = next((r["share"] for r in noising if r["family"] == "chosen"), None)

    def has(self, neuron: Neuron) -> bool:
        return neuron in self.table.index

    def row(self, neuron: Neuron) -> pd.Series:
        if not self.has(neuron):
            layers = sorted(set(self.table["layer"]))
            raise ValueError(f"neuron L{neuron[0]}.N{neuron[1]} is not in {self.dir / 'neurons.csv'} (layers "
                             f"{layers[0]}..{layers[-1]}, {int(self.table['index'].max()) + 1} neurons each)")
        return self.table.loc[neuron]

    def stats(self, neuron: Neuron) -> list[ContrastStat]:
        row = self.row(neuron)
        return [ContrastStat(name, float(row[name]), float(row[f"{name}_std"]), float(row[f"d_{name}"]),
                             float(row[f"se_{name}"]), float(row[f"q_{name}"]), float(row[f"q_equiv_{name}"]),
                             str(row[f"call_{name}"])) for name in self.contrasts]

    def causal(self, neuron: Neuron) -> CausalNumbers:
        found: dict[str, Any] = {}
        if self.screen_table is not None and neuron in self.screen_table.index:
            row = self.screen_table.loc[neuron]
            found["patch_estimate"], found["mean_estimate"] = _number(row["patch_estimate"]), _number(row["mean_estimate"])
        # Later lists are more exact: a shortlisted neuron's real ablation overrides a check's.
        for key in ("random", "top_patch_estimates", "shortlist"):
            for entry in self.screen.get(key, []):
                if (entry["layer"], entry["index"]) == neuron:
                    found.update({k: v for k, v in entry.items() if k not in ("layer", "index")})
        for entry in (self.screen.get("check") or {}).get("exceeding", []):
            if (entry["layer"], entry["index"]) == neuron:
                found.setdefault("exact_effect", entry["exact_effect"])
        fields = {k: (_number(v) if k != "load_bearing" else v) for k, v in found.items()
                  if k in CausalNumbers.__dataclass_fields__}
        rank = self.screen_order.index(neuron) + 1 if neuron in self.screen_order else None
        chosen = neuron in self.chosen
        without = self.leave_one_out.get(neuron)
        return CausalNumbers(**fields, screen_rank=rank, in_choice=chosen,
                             choice_rank=self.chosen.index(neuron) + 1 if chosen else None,
                             leave_one_out=without, set_share=self.set_share if without is not None else None)

    def index_neurons(self, limits: IndexLimits = IndexLimits()) -> dict[Neuron, list[str]]:
        """The neurons that get a page, each with why: ordered by diff rank, then the rest by layer and index."""
        table = self.table
        roles: dict[Neuron, list[str]] = {}

        def add(neurons: Any, role: str) -> None:
            for neuron in neurons:
                neuron = (int(neuron[0]), int(neuron[1]))
                if self.has(neuron) and role not in roles.setdefault(neuron, []):
                    roles[neuron].append(role)

        by_rank = table[table["rank"] > 0].sort_values("rank")
        if "flagged" in table:
            flagged = by_rank[by_rank["flagged"].astype(str) == "True"].head(limits.flagged)
            add(zip(flagged["layer"], flagged["index"]), "flagged")
        add(self.chosen, "chosen")
        add(self.screen_order[:limits.screen], "screen")
        if "outlier" in table:
            outliers = table[table["outlier"].astype(str) == "True"]
            add(zip(outliers["layer"], outliers["index"]), "outlier")
        if "class" in table:
            for name, group in by_rank.groupby("class", sort=True):
                if name and name != "none":
                    top = group.head(limits.per_class)
                    add(zip(top["layer"], top["index"]), f"class:{name}")
        return dict(sorted(roles.items(), key=lambda item: (diff_rank(table.loc[item[0]]) or math.inf, item[0])))

    def index_row(self, neuron: Neuron, roles: list[str]) -> dict[str, Any]:
        """One row of the index table: identity, roles, class, rank, and the headline numbers."""
        row = self.row(neuron)
        causal = self.causal(neuron)
        out: dict[str, Any] = {"layer": neuron[0], "index": neuron[1], "rank": diff_rank(row),
                               "class": neuron_class(row), "roles": roles,
                               "strength": _number(row.get("specific_strength")),
                               "screen": causal.patch_estimate, "exact": causal.exact_effect}
        for name in self.contrasts:
            out[f"{name}_std"] = _number(row[f"{name}_std"])
        return out
