"""``diff``: which neurons did the fine-tune change, and which changed specifically for the behaviour?

1. Load the cells a design reads (``interp.stats.loading``): reductions of the base and merged
   caches on each condition, checked to belong together.
2. Flatten layers x neurons and, block by block (float64, one block in memory at a time), compute
   for every contrast of the design its per-prompt values, the minimum-effect and TOST tests with
   delta = ``delta`` x the neuron's token scale, and effect sizes (``interp.stats.neuronwise``).
3. Correct each test across all neurons (``q_*``) and call every neuron ``changed``,
   ``equivalent`` or ``inconclusive`` per contrast.
4. Mark outlier neurons (massive / position-0 activations; ``interp.stats.outliers``), classify
   (``interp.stats.classify``), and flag the candidates the causal stages use: specific to the
   behaviour and not an outlier. Rank the flagged neurons by their largest standardised specific
   effect.
5. Count the placebo contrast's calls (the study's own false-discovery estimate) and check the top
   flagged neurons on a held-out half of the prompts (``interp.stats.replication``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from interp.stats.classify import CHANGE_CLASSES, classify_neurons, count_by_layer, firing_rates
from interp.stats.config import DiffConfig
from interp.stats.contrasts import DiffDesign
from interp.stats.equivalence import calls
from interp.stats.loading import DiffInputs, SetSources, load_design_inputs
from interp.stats.multiple import CorrectionSummary, adjust_pvalues, summarize_correction
from interp.stats.neuronwise import block_statistics, contrast_rows
from interp.stats.outliers import find_outliers
from interp.stats.output import jsonable, save_table_and_summary
from interp.stats.replication import SplitHalf, split_half

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = "neurodiff.diff/2"


@dataclass(frozen=True, eq=False)
class DiffResult:
    """The neuron table of a diff and what it was computed from."""

    table: pd.DataFrame
    """One row per neuron: flagged neurons first by ``rank``, then the rest by |specific effect|."""
    design: DiffDesign
    config: DiffConfig
    corrections: tuple[CorrectionSummary, ...]
    replication: tuple[SplitHalf, ...]
    n_prompts: dict[str, int]
    """Prompts (rows with every term defined) per contrast."""
    provenance: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return [c for c in (*CHANGE_CLASSES, self.specific_name) if f"is_{c}" in self.table.columns]

    @property
    def specific_name(self) -> str:
        return f"{self.design.name}_specific"

    def flagged(self) -> list[tuple[int, int]]:
        """``(layer, index)`` of the flagged neurons, best first."""
        rows = self.table[self.table["flagged"]].sort_values("rank")
        return list(zip(rows["layer"].astype(int).tolist(), rows["index"].astype(int).tolist()))

    def top(self, k: int = 20, by: str | None = None) -> pd.DataFrame:
        """The ``k`` best flagged neurons (``by`` None), or the ``k`` with the smallest ``by`` for
        p/q columns, else the largest |``by``|."""
        if by is None:
            return self.table[self.table["flagged"]].sort_values("rank").head(k)
        if by not in self.table.columns:
            raise ValueError(f"no column {by!r}; choose one of {list(self.table.columns)}")
        if by.startswith(("p_", "q_")):
            return self.table.nsmallest(k, by)
        return self.table.loc[self.table[by].abs().nlargest(k).index]

    def counts(self) -> dict[str, int]:
        out = {name: int(self.table[f"is_{name}"].sum()) for name in self.class_names}
        out["outlier"] = int(self.table["outlier"].sum())
        out["flagged"] = int(self.table["flagged"].sum())
        return out

    def calls(self) -> dict[str, dict[str, int]]:
        """Per contrast, how many neurons are changed / equivalent / inconclusive."""
        return {c.name: {k: int(v) for k, v in self.table[f"call_{c.name}"].value_counts().items()}
                for c in self.design.contrasts}

    def placebo(self) -> dict[str, Any] | None:
        """The placebo contrast's changed count next to each specific contrast's."""
        if self.design.placebo is None:
            return None
        n = len(self.table)
        changed = {c.name: int((self.table[f"call_{c.name}"] == "changed").sum()) for c in self.design.contrasts}
        placebo = changed[self.design.placebo]
        return {"contrast": self.design.placebo, "n_changed": placebo, "share": placebo / n,
                "specific": {name: {"n_changed": changed[name], "share": changed[name] / n}
                             for name in self.design.specific}}

    def counts_by_layer(self) -> pd.DataFrame:
        flags = self.table[[f"is_{c}" for c in self.class_names] + ["flagged"]]
        return count_by_layer(self.table["layer"], flags.rename(columns=lambda c: c.removeprefix("is_")))

    def summary(self) -> dict[str, Any]:
        """JSON-able account: config, inputs, counts, calls, placebo, replication, corrections."""
        by_layer = self.counts_by_layer()
        return jsonable({
            "schema": SUMMARY_SCHEMA,
            "design": {"name": self.design.name, "contrasts": {c.name: c.description for c in self.design.contrasts},
                       "change": self.design.change, "specific": list(self.design.specific),
                       "placebo": self.design.placebo},
            "config": asdict(self.config),
            "inputs": self.provenance,
            "n_neurons": len(self.table),
            "n_prompts": self.n_prompts,
            "counts": self.counts(),
            "calls": self.calls(),
            "placebo": self.placebo(),
            "replication": [asdict(r) for r in self.replication],
            "outliers": self.table[self.table["outlier"]][["layer", "index", "massive_ratio", "pos0_ratio"]]
            .to_dict(orient="records"),
            "counts_by_layer": {int(layer): row.to_dict() for layer, row in by_layer.iterrows()},
            "tests": {s.test: asdict(s) for s in self.corrections},
        })

    def save(self, out_csv: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path]:
        """Write the table to ``out_csv`` and the summary beside it (``.json``), each atomically."""
        paths = save_table_and_summary(self.table, self.summary(), out_csv, overwrite)
        log.info("wrote %s and %s", *paths)
        return paths


MIN_CONTRAST_PROMPTS = 4
"""Fewer prompts than this leave a paired test with too few degrees of freedom to say anything."""


def _columns(inputs: DiffInputs, design: DiffDesign, config: DiffConfig) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    rows = {c.name: contrast_rows(inputs, c) for c in design.contrasts}
    n_prompts = {name: int(mask.sum()) for name, mask in rows.items()}
    short = [name for name, n in n_prompts.items() if n < MIN_CONTRAST_PROMPTS]
    if short:
        raise ValueError(f"contrasts {short} have fewer than {MIN_CONTRAST_PROMPTS} prompts with tokens in every term's scope "
                         f"({ {n: n_prompts[n] for n in short} }); give prompts with marks (and controls)")
    n = inputs.n_neurons
    starts = range(0, n, config.block_size)
    blocks = [block_statistics(inputs, design, config.delta, start, min(start + config.block_size, n),
                               config.split_seed, rows)
              for start in tqdm(starts, desc="diff", unit="block", disable=len(starts) < 2, leave=False)]
    return {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}, n_prompts


def _change_descriptives(inputs: DiffInputs, design: DiffDesign, config: DiffConfig):
    if design.change is None:
        return None, None
    condition = design.contrast(design.change).terms[0].condition
    keys = [(m, condition, "content_absmean") for m in ("base", "merged")]
    if not all(k in inputs.cells for k in keys):
        return None, None
    magnitudes = tuple(np.nanmean(inputs.cells[k].reshape(len(inputs.cells[k]), -1).astype(np.float64), axis=0)
                       for k in keys)
    stats = [inputs.stats.get((m, condition)) for m in ("base", "merged")]
    rates = None
    if all(s is not None and s.abs_hist is not None for s in stats):
        rates = tuple(r.ravel() for r in firing_rates(stats[0], stats[1], config.classify.firing_threshold))
    return magnitudes, rates


def diff_inputs(inputs: DiffInputs, design: DiffDesign, config: DiffConfig | None = None) -> DiffResult:
    """Steps 2-5 of the module docstring on inputs already in memory."""
    config = config or DiffConfig()
    n_layers, d_mlp = len(inputs.layers), inputs.d_mlp
    columns, n_prompts = _columns(inputs, design, config)
    table = {"layer": np.repeat(np.asarray(inputs.layers, dtype=np.int64), d_mlp),
             "index": np.tile(np.arange(d_mlp, dtype=np.int64), n_layers)}
    for condition, scale in inputs.scales.items():
        table[f"scale_{condition}"] = scale.ravel()
    corrections, call_by, estimate_by = [], {}, {}
    for contrast in design.contrasts:
        name = contrast.name
        q = adjust_pvalues(columns[f"p_{name}"], config.correction)
        q_equiv = adjust_pvalues(columns[f"p_equiv_{name}"], config.correction)
        call_by[name], estimate_by[name] = calls(q, q_equiv, config.alpha), columns[name]
        for key in (name, f"{name}_std", f"d_{name}", f"se_{name}", f"p_{name}"):
            table[key] = columns[key]
        table[f"q_{name}"], table[f"p_equiv_{name}"], table[f"q_equiv_{name}"] = q, columns[f"p_equiv_{name}"], q_equiv
        table[f"call_{name}"] = call_by[name]
        for key in (f"{name}_std_a", f"{name}_std_b", f"p_{name}_a"):
            if key in columns:
                table[key] = columns[key]
        corrections.append(summarize_correction(name, columns[f"p_{name}"], q, config.alpha, config.correction))
    stats = [s for s in inputs.stats.values() if s is not None]
    if stats:
        outliers = find_outliers(stats, config.outliers)
        table.update(massive=outliers.massive.ravel(), pos0_only=outliers.pos0_only.ravel(),
                     massive_ratio=outliers.massive_ratio.ravel(), pos0_ratio=outliers.pos0_ratio.ravel())
        outlier = outliers.any.ravel()
    else:
        outlier = np.zeros(n_layers * d_mlp, dtype=bool)
    table["outlier"] = outlier
    magnitudes, rates = _change_descriptives(inputs, design, config)
    specific_name = f"{design.name}_specific"
    classes = classify_neurons(call_by, estimate_by, design.specific, design.change, magnitudes, rates,
                               config.classify, specific_name)
    table.update(classes.columns)
    frame = pd.DataFrame(table)
    frame["class"] = classes.labels.to_numpy()
    for name in classes.flags.columns:
        frame[f"is_{name}"] = classes.flags[name].to_numpy()
    flagged = classes.flags[specific_name].to_numpy() & (~outlier if config.exclude_outliers else True)
    frame["flagged"] = flagged
    strength = np.max([np.where(call_by[c] == "changed", np.abs(frame[f"{c}_std"].to_numpy()), 0.0)
                       for c in design.specific], axis=0) if design.specific else np.zeros(len(frame))
    frame["specific_strength"] = strength
    order = np.lexsort((-np.abs(np.nan_to_num(frame[f"{design.specific[0]}_std"].to_numpy())) if design.specific
                        else np.zeros(len(frame)), -np.where(flagged, strength, -np.inf)))
    frame = frame.iloc[order].reset_index(drop=True)
    frame.insert(2, "rank", np.where(frame["flagged"], np.arange(1, len(frame) + 1), 0))
    replication = tuple(split_half(frame, c, config.alpha, config.correction, config.replication_top,
                                   frame["outlier"].to_numpy() if config.exclude_outliers else None)
                        for c in design.specific)
    result = DiffResult(frame, design, config, tuple(corrections), replication, n_prompts, dict(inputs.provenance))
    placebo = result.placebo()
    if placebo is not None:
        log.info("placebo %s: %d neurons changed (%.2f%%); %s", placebo["contrast"], placebo["n_changed"],
                 100 * placebo["share"], ", ".join(f"{k}: {v['n_changed']}" for k, v in placebo["specific"].items()))
    return result


def diff_caches(base: SetSources | None, merged: SetSources | None, design: DiffDesign | None = None,
                config: DiffConfig | None = None) -> DiffResult:
    """Compare the base and merged model neuron by neuron under ``design`` (default: the reading
    design of the behaviour whose caches are there, with the writing contrast when a ``writing``
    cache is present: ``interp.stats.designs.reading_design_for``).

    ``base`` and ``merged`` are each a directory holding ``{condition}.h5`` for the design's
    conditions, or a mapping condition -> cache path or open cache (e.g. ``record(..., out=None)``).
    Example::

        result = diff_caches("runs/base", "runs/merged")
        result.top(10)            # the best flagged neurons
        result.save("neurons.csv")
    """
    if design is None:
        from interp.stats.designs import reading_design_for

        if isinstance(merged, (str, os.PathLike)):
            names = [p.stem for p in Path(merged).glob("*.h5") if not p.name.endswith(".partial.h5")]
        else:
            names = list(merged or ())
        design = reading_design_for(names)
    return diff_inputs(load_design_inputs(design, base, merged), design, config)
