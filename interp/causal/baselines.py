"""Could a simpler choice have done as well? The chosen set against baselines that could win.

The sweep's random sets are an easy bar (random sets of k neurons remove about nothing) and they are
scored on the contexts that chose the set. Here every competitor gets the verdict's intervention
(mean ablation) on the writing contexts the sweep did *not* choose on, and is scored by the share of
the target mass it removes there (``interp.causal.proxy``):

1. ``raw attribution``: the top k by the screen's first-order mean-ablation estimate, unverified
   (what a screen alone would pick);
2. ``screen top``: random k-subsets of the screen's ``top_pool`` strongest estimates (a pick among the
   obvious candidates, without the sweep's exact verification and selectivity);
3. ``direction``: the difference-of-means residual direction (merged minus base, over the contexts
   that chose the set) projected out of the block outputs at the chosen set's layers (directional
   ablation: one direction per layer instead of k neurons);
4. ``random``: sets matched to the chosen set by layer and write-norm decile, drawn from an unfiltered
   pool (every neuron but the chosen ones and the diff's outliers; flagged neurons included).

The chosen set's standing: against each family, the share of its members the chosen set removes
more than; among all competitors, its rank (1: it removes the most). Intervals: a bootstrap over
contexts, every set's removal recomputed on each resample (paired). The random family's share also
gets a Clopper-Pearson interval for its finite number of sets.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor, nn

from activations.precision import precision_context
from interp.causal.config import BaselinesConfig
from interp.causal.controls import matched_random_sets, neuron_mask
from interp.causal.inputs import TokenBatch
from interp.causal.proxy import build_proxy_suite, context_log_mass, measure_sets
from interp.causal.results import write_json
from interp.causal.uncertainty import clopper_pearson
from interp.interventions import Neuron, NeuronSet
from interp.interventions.steering import projected_out

log = logging.getLogger(__name__)

SCHEMA = "neurodiff.baselines/1"
FAMILIES = ("raw attribution", "screen top", "direction", "random")


def _removal(log_mass: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Share of the clean target mass removed, per row of ``log_mass`` ``(..., contexts)``."""
    return 1.0 - np.exp(log_mass).mean(-1) / np.exp(clean).mean(-1)


@dataclass(frozen=True, eq=False)
class BaselinesResult:
    config: BaselinesConfig
    table: pd.DataFrame
    """One row per set: family, name, removal, low, high."""
    standing: dict[str, dict[str, float]]
    """Per family: ``n``, ``beaten`` (share of its members the chosen set removes more than), ``low``,
    ``high`` (bootstrap over contexts), ``best`` (the family's largest removal)."""
    rank: dict[str, float]
    """The chosen set's rank among all competitors (1 = removes the most): value, low, high, out_of."""
    k: int
    n_contexts: int
    seconds: float

    @property
    def chosen(self) -> dict[str, Any]:
        return self.table[self.table["family"] == "chosen"].iloc[0].to_dict()

    def sentence(self) -> str:
        c, s = self.chosen, self.standing
        parts = []
        for family in FAMILIES:
            if family in s:
                f = s[family]
                parts.append(f"{family} ({f['n']}): beats {f['beaten']:.0%} [{f['low']:.0%}, {f['high']:.0%}], best "
                             f"{f['best']:.0%}")
        return (f"On {self.n_contexts} held-out contexts the chosen {self.k} neurons remove {c['removal']:.0%} "
                f"[{c['low']:.0%}, {c['high']:.0%}] of the target mass, rank {self.rank['value']:.0f} "
                f"[{self.rank['low']:.0f}, {self.rank['high']:.0f}] of {self.rank['out_of']:.0f}; against "
                + "; ".join(parts) + ".")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "config": dataclasses.asdict(self.config), "k": self.k,
                "n_contexts": self.n_contexts, "seconds": round(self.seconds, 1), "standing": self.standing,
                "rank": self.rank, "sentence": self.sentence(), "rows": self.table.to_dict(orient="records")}

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        return write_json(path, self.to_dict(), overwrite=overwrite)


def competitor_sets(chosen: NeuronSet, ranking: Sequence[Neuron], decile: np.ndarray, pool: np.ndarray,
                    config: BaselinesConfig) -> dict[str, list[NeuronSet]]:
    """Families 1, 2 and 4 of the module docstring (``ranking``: the screen's mean-ablation estimates,
    strongest first, outliers already left out)."""
    k = len(chosen)
    if len(ranking) < k:
        raise ValueError(f"the screen ranks {len(ranking)} neurons, fewer than the chosen set's {k}")
    top = list(ranking[: max(config.top_pool, k)])
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    draws = [NeuronSet.from_pairs([top[i] for i in sorted(rng.choice(len(top), k, replace=False))])
             for _ in range(config.n_top_draws)]
    random = matched_random_sets(chosen, decile, pool & ~neuron_mask(pool.shape, chosen), config.n_random,
                                 config.seed).sets
    return {"raw attribution": [NeuronSet.from_pairs(ranking[:k])], "screen top": draws, "random": list(random)}


def compare_baselines(merged: nn.Module, contexts: TokenBatch, neutral: TokenBatch, target_ids: Tensor,
                      means: Mapping[int, Tensor], chosen: NeuronSet, ranking: Sequence[Neuron], decile: np.ndarray,
                      pool: np.ndarray, direction: Mapping[int, Tensor] | None,
                      config: BaselinesConfig = BaselinesConfig(), *, batch_size: int = 8,
                      max_copies: int = 8) -> BaselinesResult:
    """The module docstring on ``contexts`` (held-out writing contexts of the merged model; ``neutral``
    is only carried by the suite); ``direction`` holds one residual direction per chosen layer (None:
    no direction baseline). Every pass, the clean one included, runs in ``config.precision``."""
    if not len(chosen):
        raise ValueError("the chosen set is empty; there is nothing to compare")
    started = time.perf_counter()
    families = competitor_sets(chosen, ranking, decile, pool, config)
    names, sets = [("chosen", "chosen")], [chosen]
    for family, members in families.items():
        names += [(family, f"{family} {i}" if len(members) > 1 else family) for i in range(len(members))]
        sets += members
    with precision_context(config.precision, next(merged.parameters()).device):
        suite = build_proxy_suite(merged, contexts, neutral, target_ids, batch_size=batch_size)
        log_mass = [r.log_mass for r in measure_sets(merged, suite, sets, "mean", dict(means), neutral=False,
                                                     max_copies=max_copies, desc="baselines")]
        if direction:
            with projected_out(merged, direction):
                log_mass.append(context_log_mass(merged, suite))
            names.append(("direction", "direction"))
    matrix = np.stack(log_mass)  # (sets, contexts)
    clean = suite.clean_log_mass
    point = _removal(matrix, clean)
    draws = np.random.default_rng(np.random.SeedSequence([config.seed, 2])).integers(
        0, len(clean), size=(config.n_boot, len(clean)))
    boot = np.stack([_removal(matrix[:, d], clean[d]) for d in draws])  # (n_boot, sets)
    q = [(1 - config.confidence) / 2, 0.5 + config.confidence / 2]
    low, high = np.quantile(boot, q, axis=0)
    table = pd.DataFrame({"family": [f for f, _ in names], "name": [n for _, n in names], "removal": point,
                          "low": low, "high": high})
    family = table["family"].to_numpy()
    standing = {}
    for name in FAMILIES:
        rows = np.flatnonzero(family == name)
        if not len(rows):
            continue
        beaten = (boot[:, [0]] > boot[:, rows]).mean(1)
        share = float((point[0] > point[rows]).mean())
        entry = {"n": int(len(rows)), "beaten": share, "low": float(np.quantile(beaten, q[0])),
                 "high": float(np.quantile(beaten, q[1])), "best": float(point[rows].max())}
        if name == "random":
            cp = clopper_pearson(int(round(share * len(rows))), len(rows), config.confidence)
            entry.update({"finite_low": cp[0], "finite_high": cp[1]})
        standing[name] = entry
    ranks = 1 + (boot[:, 1:] >= boot[:, [0]]).sum(1)
    rank = {"value": float(1 + (point[1:] >= point[0]).sum()), "low": float(np.quantile(ranks, q[0])),
            "high": float(np.quantile(ranks, q[1])), "out_of": float(len(point))}
    result = BaselinesResult(config, table, standing, rank, len(chosen), len(clean), time.perf_counter() - started)
    log.info("%s", result.sentence())
    return result
