"""Where the fine-tune's change lives: activation patching in both directions, on held-out contexts.

The screen and the sweep ask which neurons the merged model's behaviour *needs*; this asks where the
fine-tune's *change* is. Both models read the same writing contexts (the merged model's own replies
cut before the behaviour, ``interp.causal.inputs.writing_batch``) and are scored by the probability
of the behaviour's target tokens there:

- noising: the merged model with the base model's values in a neuron set. Share of the fine-tune's
  effect removed: ``(M - X) / (M - B)``;
- denoising: the base model with the merged model's values in the set. Share restored:
  ``(X - B) / (M - B)``.
M and B are the merged and base models' target probability and X the patched model's, each the mean
over contexts. A share of 1 means the set carries the whole change at these positions; shares below
0 or above 1 are reported as they come (a set can act against the change or overshoot it).

What is patched:

1. bounds: every MLP neuron of every layer at once (how much of the change the MLP activations carry
   at all, against attention and the residual stream), and every neuron of one layer at a time (a
   layer profile);
2. the top k of each ranking over a k grid (``change``: the screen's base-value patching estimate;
   ``ablation``: its mean-ablation estimate; ``specific``: the diff's ranking), and the chosen
   suppressor set;
3. matched random sets of the chosen set's size (``interp.causal.controls``): a baseline that could
   win;
4. leave-one-out of the chosen set (noising): what each neuron adds to the set's share;
5. the diff's neuron classes (the paper's "activated" and "amplified" neurons), each against its
   own matched random sets.

The contexts are the ones the sweep did not use (it chose the set on the first ``n_contexts``), so a
set is never scored on the contexts that chose it. Intervals: a bootstrap over contexts, the shares
recomputed per resample with M, B and X resampled together (paired).
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
from torch import nn

from activations.precision import precision_context
from interp.causal.config import WhereConfig
from interp.causal.controls import matched_random_sets, neuron_mask
from interp.causal.inputs import TokenBatch
from interp.causal.proxy import ProxySuite, build_proxy_suite, measure_sets
from interp.causal.results import write_json
from interp.interventions import Neuron, NeuronSet
from training.reply_metrics import Interval

log = logging.getLogger(__name__)

SCHEMA = "neurodiff.where/1"
DIRECTIONS = ("noising", "denoising")


@dataclass(frozen=True, eq=False)
class WhereResult:
    """Every patched set's share of the fine-tune's change, in both directions."""

    config: WhereConfig
    table: pd.DataFrame
    """One row per (direction, set): direction, family (bound / layer / top / chosen / random /
    leave-one-out), name, k, layer (of a layer set, or of the neuron left out; -1 otherwise), index (of
    the neuron left out; -1 otherwise), mass, share and its interval."""
    clean: dict[str, float]
    """merged and base target probability (means over the contexts), and their difference."""
    n_contexts: int
    seconds: float

    def rows(self, direction: str, family: str) -> pd.DataFrame:
        return self.table[(self.table["direction"] == direction) & (self.table["family"] == family)]

    def share(self, direction: str, family: str, name: str | None = None) -> dict[str, float]:
        """The row of one set (the first of its family when ``name`` is None)."""
        rows = self.rows(direction, family)
        if name is not None:
            rows = rows[rows["name"] == name]
        if rows.empty:
            raise KeyError(f"no {direction} row for {family} {name or ''}".strip())
        return rows.iloc[0].to_dict()

    def random_beaten(self, direction: str, family: str = "chosen", name: str | None = None) -> float:
        """Share of the matched random sets whose share is below the set's (the chosen set's, or a
        class's: ``family="class"``, ``name`` the class)."""
        mine = self.share(direction, family, name)["share"]
        random = self.rows(direction, "random" if family == "chosen" else f"{name} random")["share"].to_numpy()
        return float(np.mean(random < mine)) if len(random) else float("nan")

    def sentence(self) -> str:
        bound = {d: self.share(d, "bound") for d in DIRECTIONS}
        chosen = {d: self.share(d, "chosen") for d in DIRECTIONS}
        pct = lambda row: f"{row['share']:.1%} [{row['low']:.1%}, {row['high']:.1%}]"  # noqa: E731
        return (f"On {self.n_contexts} held-out contexts, the fine-tune raises the target probability from "
                f"{self.clean['base']:.3g} to {self.clean['merged']:.3g}. Base values in all MLP neurons remove "
                f"{pct(bound['noising'])} of that change, merged values restore {pct(bound['denoising'])}; the "
                f"chosen {chosen['noising']['k']} neurons remove {pct(chosen['noising'])} and restore "
                f"{pct(chosen['denoising'])} (matched random sets beaten: noising "
                f"{self.random_beaten('noising'):.0%}, denoising {self.random_beaten('denoising'):.0%}).")

    def to_dict(self) -> dict[str, Any]:
        classes = self.rows("noising", "class")["name"].tolist()
        return {"schema": SCHEMA, "config": dataclasses.asdict(self.config), "clean": self.clean,
                "n_contexts": self.n_contexts, "seconds": round(self.seconds, 1),
                "random_beaten": {d: self.random_beaten(d) for d in DIRECTIONS},
                "class_random_beaten": {c: {d: self.random_beaten(d, "class", c) for d in DIRECTIONS} for c in classes},
                "sentence": self.sentence(), "rows": self.table.drop(columns=["neurons"]).to_dict(orient="records")}

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        return write_json(path, self.to_dict(), overwrite=overwrite)


class TooFewContexts(ValueError):
    """Every writing context chose the set: nothing is left to score it on (a stage records why and skips)."""


def held_out_contexts(contexts: TokenBatch, used_ids: Sequence[str], limit: int | None) -> TokenBatch:
    """The first ``limit`` rows of ``contexts`` whose ids the sweep did not score, shortest first (the
    proxy cuts each chunk to its longest row: similar lengths together compute less padding)."""
    used = set(used_ids)
    rows = [i for i, row_id in enumerate(contexts.ids) if row_id not in used][:limit]
    rows.sort(key=lambda i: int(contexts.attention_mask[i].sum()))
    if len(rows) < 2:  # one context gives no interval over contexts, only a point
        raise TooFewContexts(f"{len(contexts) - len(rows)} of {len(contexts)} writing contexts were used to choose the "
                             f"set, leaving {len(rows)}; scoring needs at least 2 held-out contexts (sample more own "
                             "replies: the study's --writing-questions or --writing-samples)")
    return TokenBatch(contexts.input_ids[rows], contexts.attention_mask[rows], contexts.score_mask[rows],
                      [contexts.ids[i] for i in rows])


def _shares(direction: str, p_merged: np.ndarray, p_base: np.ndarray, p_patched: np.ndarray,
            draws: np.ndarray, confidence: float) -> list[Interval]:
    """Share of the change (module docstring) for each patched set ``(sets, contexts)`` and its
    bootstrap interval, with the contexts resampled by ``draws`` ``(n_boot, contexts)``."""
    def share(m, b, x):
        effect = m - b
        return (m - x) / effect if direction == "noising" else (x - b) / effect

    values = share(p_merged.mean(), p_base.mean(), p_patched.mean(-1))
    boot = share(p_merged[draws].mean(-1), p_base[draws].mean(-1), p_patched[:, draws].mean(-1))  # (sets, n_boot)
    low, high = np.quantile(boot, [(1 - confidence) / 2, 0.5 + confidence / 2], axis=-1)
    return [Interval(float(v), float(lo), float(hi), "bootstrap over contexts", p_merged.shape[0])
            for v, lo, hi in zip(np.atleast_1d(values), low, high)]


def _named_sets(rankings: Mapping[str, Sequence[Neuron]], chosen: NeuronSet, widths: Sequence[int],
                config: WhereConfig) -> list[dict[str, Any]]:
    sets = [{"family": "bound", "name": "all MLP neurons", "k": sum(widths), "layer": -1,
             "set": NeuronSet.from_pairs((layer, i) for layer, width in enumerate(widths) for i in range(width))}]
    if config.layer_profile:
        sets += [{"family": "layer", "name": f"layer {layer}", "k": width, "layer": layer,
                  "set": NeuronSet.at(layer, range(width))} for layer, width in enumerate(widths)]
    for name, ranking in rankings.items():
        for k in sorted({min(k, len(ranking)) for k in config.k_grid if ranking}):
            sets.append({"family": "top", "name": name, "k": k, "layer": -1, "set": NeuronSet.from_pairs(ranking[:k])})
    sets.append({"family": "chosen", "name": "chosen", "k": len(chosen), "layer": -1, "set": chosen})
    return sets


def where_change_lives(merged: nn.Module, base: nn.Module, contexts: TokenBatch, neutral: TokenBatch, target_ids,
                       rankings: Mapping[str, Sequence[Neuron]], chosen: NeuronSet, decile: np.ndarray,
                       pool: np.ndarray, config: WhereConfig = WhereConfig(), *,
                       classes: Mapping[str, NeuronSet] | None = None, batch_size: int = 8) -> WhereResult:
    """Every part of the module docstring on ``contexts`` (already held out: ``held_out_contexts``);
    ``neutral`` is only carried by the suites (no KL is measured here); ``decile`` and ``pool`` come
    from ``interp.causal.controls``; ``classes`` maps a class name to its neurons (empty ones skipped)."""
    if not len(chosen):
        raise ValueError("the chosen set is empty; there is nothing to locate")
    started = time.perf_counter()
    with precision_context(config.precision, next(merged.parameters()).device):
        table, clean, n = _patch_everything(merged, base, contexts, neutral, target_ids, rankings, chosen, decile, pool,
                                            config, classes, batch_size)
    seconds = time.perf_counter() - started
    result = WhereResult(config, table, clean, n, seconds)
    log.info("%s (%.0f s)", result.sentence(), seconds)
    return result


def _patch_everything(merged: nn.Module, base: nn.Module, contexts: TokenBatch, neutral: TokenBatch, target_ids,
                      rankings: Mapping[str, Sequence[Neuron]], chosen: NeuronSet, decile: np.ndarray,
                      pool: np.ndarray, config: WhereConfig, classes: Mapping[str, NeuronSet] | None,
                      batch_size: int) -> tuple[pd.DataFrame, dict[str, float], int]:
    """The clean runs, then every set in both directions: (table, clean masses, contexts)."""
    suites: dict[str, ProxySuite] = {
        "noising": build_proxy_suite(merged, contexts, neutral, target_ids, batch_size=batch_size, donor=base),
        "denoising": build_proxy_suite(base, contexts, neutral, target_ids, batch_size=batch_size, donor=merged)}
    receivers = {"noising": merged, "denoising": base}
    p_merged = np.exp(suites["noising"].clean_log_mass)
    p_base = np.exp(suites["denoising"].clean_log_mass)
    clean = {"merged": float(p_merged.mean()), "base": float(p_base.mean())}
    clean["change"] = clean["merged"] - clean["base"]
    if clean["change"] <= 0:
        raise ValueError(f"on these {len(p_merged)} contexts the fine-tune does not raise the target probability "
                         f"(base {clean['base']:.3g}, merged {clean['merged']:.3g}); there is no change to locate")
    widths = [pool.shape[1]] * pool.shape[0]
    named = _named_sets(rankings, chosen, widths, config)
    draw = matched_random_sets(chosen, decile, pool & ~neuron_mask(pool.shape, chosen), config.n_random, config.seed)
    named += [{"family": "random", "name": f"random {i}", "k": len(s), "layer": -1, "set": s}
              for i, s in enumerate(draw.sets)]
    for offset, (name, members) in enumerate((classes or {}).items(), start=1):
        if not len(members):
            continue
        named.append({"family": "class", "name": name, "k": len(members), "layer": -1, "set": members})
        cloud = matched_random_sets(members, decile, pool & ~neuron_mask(pool.shape, members), config.class_random,
                                    config.seed + 7919 * offset)
        named += [{"family": f"{name} random", "name": f"{name} random {i}", "k": len(s), "layer": -1, "set": s}
                  for i, s in enumerate(cloud.sets)]
    loo = [{"family": "leave-one-out", "name": f"without L{layer}.N{index}", "k": len(chosen) - 1, "layer": layer,
            "index": index, "set": NeuronSet.from_pairs(n for n in chosen if n != (layer, index))}
           for layer, index in chosen] if config.leave_one_out and len(chosen) > 1 else []
    draws = np.random.default_rng(config.seed).integers(0, len(p_merged), size=(config.n_boot, len(p_merged)))
    rows = []
    for direction in DIRECTIONS:
        todo = named + (loo if direction == "noising" else [])
        results = measure_sets(receivers[direction], suites[direction], [item["set"] for item in todo], "patch",
                               neutral=False, max_copies=config.max_copies, desc=f"where: {direction}")
        patched = np.exp(np.stack([r.log_mass for r in results]))
        intervals = _shares(direction, p_merged, p_base, patched, draws, config.confidence)
        for item, mass, interval in zip(todo, patched.mean(-1), intervals):
            rows.append({"direction": direction, "family": item["family"], "name": item["name"], "k": item["k"],
                         "layer": item["layer"], "index": item.get("index", -1), "mass": float(mass), "share": interval.value, "low": interval.low,
                         "high": interval.high, "neurons": item["set"].to_list() if item["family"] == "chosen" else []})
    return pd.DataFrame(rows), clean, len(p_merged)

