"""The causal sweep: top-k sets of each ranking under each intervention, against matched random sets.

Every condition is measured with the teacher-forced proxy (``interp.causal.proxy``): the share of
the behaviour's target probability removed at the positions where the merged model starts it
(``reduction``), and the next-token KL / perplexity on templated neutral chats. Then:

1. For every ranking (the screen's selectivity ranking, the diff's behaviour-specific ranking, ...)
   and every intervention (mean, zero, resample ablation; base-value patching), the top-k sets over
   the k grid trace a curve of reduction against neutral KL.
2. The suppression choice: on the primary ranking under the suppressor's intervention, the smallest
   k whose set removes at least ``target_reduction`` of the target mass while its neutral KL stays
   within ``kl_budget`` and its perplexity within ``ppl_budget``; found on the grid, then narrowed by
   bisection between the last failing and the first passing grid point. If no k meets the target,
   the k with the largest reduction within budget is kept and the result says so.
3. Matched random clouds (``interp.causal.controls``: same layer and write-norm-decile counts,
   drawn from the documented pool) at the chosen k and at ``random_k``: how many random sets of the
   same size remove less than the chosen set (``random_beaten``), and how each compares per nat of
   KL. Random sets use the same intervention as the set they control.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.causal.config import SweepConfig
from interp.causal.controls import matched_random_sets, neuron_mask
from interp.causal.proxy import ProxyResult, ProxySuite, measure_sets
from interp.causal.results import write_json
from interp.interventions import Neuron, NeuronSet
from interp.interventions.references import ContentReference

log = logging.getLogger(__name__)

SCHEMA = "neurodiff.causal_sweep/1"


@dataclass(frozen=True, eq=False)
class SweepResult:
    """Every measured condition, the suppression choice and the random-set comparison."""

    config: SweepConfig
    table: pd.DataFrame
    """One row per condition: ranking, intervention, k, kind (top / random), set, metrics, neurons."""
    clean: dict[str, float]
    choice: dict[str, Any]
    """ranking, intervention, k, neurons, metrics, met_target, within_budget."""
    random_beaten: dict[str, float]
    """``"ranking/k"`` -> share of matched random sets that removed less than the top set."""
    controls: dict[str, Any]

    def chosen(self) -> NeuronSet:
        return NeuronSet.from_pairs(self.choice["neurons"])

    def to_dict(self) -> dict[str, Any]:
        rows = self.table.drop(columns=["neurons"]).to_dict(orient="records")
        return {"schema": SCHEMA, "config": dataclasses.asdict(self.config), "clean": self.clean,
                "choice": self.choice, "random_beaten": self.random_beaten, "controls": self.controls,
                "conditions": rows}

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        return write_json(path, self.to_dict(), overwrite=overwrite)


def _reference_for(mode: str, reference: ContentReference):
    return {"mean": reference.means, "resample": reference.pool}.get(mode)


def _rows(ranking: str, mode: str, kind: str, ks: Sequence[int], sets: Sequence[NeuronSet],
          results: Sequence[ProxyResult], indices: Sequence[int | None]) -> list[dict]:
    return [{"ranking": ranking, "intervention": mode, "k": k, "kind": kind, "set": i, **r.metrics(),
             "layers": len(s.layers), "neurons": s.to_list()} for k, s, r, i in zip(ks, sets, results, indices)]


def _within_budget(row: Mapping[str, float], clean_ppl: float, config: SweepConfig) -> bool:
    return row["kl_neutral"] <= config.kl_budget and row["ppl_neutral"] <= clean_ppl * (1 + config.ppl_budget)


def sweep(
    model, suite: ProxySuite, rankings: Mapping[str, Sequence[Neuron]], reference: ContentReference,
    decile: np.ndarray, pool: np.ndarray, config: SweepConfig = SweepConfig(), *, primary: str | None = None,
) -> SweepResult:
    """Steps 1-3 of the module docstring; ``rankings`` maps a name to neurons best first (the first,
    or ``primary``, is the suppressor's); ``decile`` and ``pool`` come from ``interp.causal.controls``."""
    if not rankings:
        raise ValueError("the sweep needs at least one ranking of candidate neurons")
    primary = primary or next(iter(rankings))
    rows: list[dict] = []

    def run(ranking: str, mode: str, ks: Sequence[int]) -> list[dict]:
        candidates = list(rankings[ranking])
        ks = sorted({min(k, len(candidates)) for k in ks if k >= 1})
        sets = [NeuronSet.from_pairs(candidates[:k]) for k in ks]
        results = measure_sets(model, suite, sets, mode, _reference_for(mode, reference),
                               max_copies=config.max_copies, desc=f"sweep {ranking} {mode}")
        new = _rows(ranking, mode, "top", ks, sets, results, [None] * len(ks))
        rows.extend(new)
        return new

    for ranking in rankings:
        run(ranking, config.suppress_with, config.k_grid)
        if ranking == primary:
            for mode in config.interventions:
                if mode != config.suppress_with:
                    run(ranking, mode, config.side_by_side_k)
    clean = {"mass": suite.clean_mass, "ppl_neutral": suite.clean_ppl}
    curve = sorted((r for r in rows if r["ranking"] == primary and r["intervention"] == config.suppress_with),
                   key=lambda r: r["k"])
    passing = [r for r in curve if r["reduction"] >= config.target_reduction and _within_budget(r, clean["ppl_neutral"], config)]
    if passing and config.bisect:
        high = passing[0]["k"]
        low = max([r["k"] for r in curve if r["k"] < high] or [0])
        while high - low > 1:
            middle = (low + high) // 2
            probe = run(primary, config.suppress_with, [middle])[0]
            if probe["reduction"] >= config.target_reduction and _within_budget(probe, clean["ppl_neutral"], config):
                high = middle
            else:
                low = middle
        passing = [r for r in rows if r["ranking"] == primary and r["intervention"] == config.suppress_with
                   and r["k"] == high]
    if passing:
        chosen, met = passing[0], True
    else:
        budgeted = [r for r in curve if _within_budget(r, clean["ppl_neutral"], config)] or curve
        chosen, met = max(budgeted, key=lambda r: r["reduction"]), False
    choice = {"ranking": primary, "intervention": config.suppress_with, "k": chosen["k"], "neurons": chosen["neurons"],
              "met_target": met, "within_budget": _within_budget(chosen, clean["ppl_neutral"], config),
              "metrics": {key: chosen[key] for key in ("reduction", "log_mass_change", "kl_neutral", "ppl_neutral")}}
    random_beaten, borrowed = {}, {}
    controlled = [(primary, k) for k in sorted({chosen["k"], *config.random_k})]
    if config.control_all_rankings:
        controlled += [(name, chosen["k"]) for name in rankings if name != primary]
    for ranking, k in controlled:
        k = min(k, len(rankings[ranking]))
        found = [r for r in rows if r["ranking"] == ranking and r["intervention"] == config.suppress_with
                 and r["kind"] == "top" and r["k"] == k]
        top = found[0] if found else run(ranking, config.suppress_with, [k])[0]
        candidates = NeuronSet.from_pairs(top["neurons"])
        draw = matched_random_sets(candidates, decile, pool & ~neuron_mask(pool.shape, candidates), config.n_random,
                                   config.seed + 7919 * k)
        results = measure_sets(model, suite, list(draw.sets), config.suppress_with,
                               _reference_for(config.suppress_with, reference), max_copies=config.max_copies,
                               desc=f"random sets {ranking} k={k}")
        rows.extend(_rows(ranking, config.suppress_with, "random", [top["k"]] * len(results), draw.sets, results,
                          list(range(len(results)))))
        reductions = np.array([r.reduction for r in results])
        random_beaten[f"{ranking}/{top['k']}"] = float(np.mean(reductions < top["reduction"])) if len(results) else float("nan")
        borrowed[f"{ranking}/{top['k']}"] = draw.borrowed
    controls = {"n_random": config.n_random, "pool_size": int(pool.sum()), "borrowed_from_other_deciles": borrowed,
                "strata": "layer x within-layer decile of E[a^2] ||W_out[:, i]||^2 (content tokens of neutral chats)"}
    log.info("suppression choice: %s", choice["metrics"] | {"k": choice["k"], "met_target": met})
    return SweepResult(config, pd.DataFrame(rows), clean, choice, random_beaten, controls)

