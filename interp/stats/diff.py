"""``diff``: which neurons did the fine-tune change, and do they respond to emojis?

1. Load one reduction of the base and merged caches on ``emoji``, ``emoji-free`` and (optionally)
   ``neutral`` and check that their rows line up (``interp.stats.loading``).
2. Flatten layers x neurons and compute every per-neuron statistic block by block (float64, one
   block in memory at a time; ``interp.stats.neuronwise``): cell means, effect sizes, paired change
   tests (t and Wilcoxon), emoji selectivity within each model, the model x emoji interaction and
   the model x set interaction against neutral prompts.
3. Correct each test's p-values across all neurons (``q_*``) and count what the correction removes.
4. Classify neurons (``interp.stats.classify``) and rank the table by the interaction effect.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from interp.stats.classify import CLASSES, ClassifyConfig, classify_neurons, count_by_layer
from interp.stats.interaction import PROMPT_EFFECTS, PromptEffects
from interp.stats.loading import REDUCTIONS, DiffInputs, SetSources, load_diff_inputs
from interp.stats.multiple import (
    Correction,
    CorrectionSummary,
    adjust_pvalues,
    resolve_correction,
    summarize_correction,
)
from interp.stats.neuronwise import CELLS, TESTS, block_statistics
from interp.stats.output import jsonable, save_table_and_summary
from interp.stats.overlap import OverlapResult, pairwise_overlaps

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = "neurodiff.diff/1"


@dataclass(frozen=True)
class DiffConfig:
    """How ``diff`` tests, corrects and classifies (stored in the summary)."""

    reduction: str = "mean"
    """Per-prompt reduction of the caches to compare: ``mean``, ``max`` or ``last`` token."""
    correction: Correction = "fdr_bh"
    """Multiple-testing correction across neurons, per test: ``fdr_bh`` (Benjamini-Hochberg),
    ``fdr_by`` (Benjamini-Yekutieli, any dependence) or ``bonferroni``; ``bh``/``by`` also accepted."""
    alpha: float = 0.05
    """Significance level for q-values (classes) and for the p < alpha vs q < alpha counts."""
    prompt_effects: PromptEffects = "slopes"
    """Prompt effects in the interaction OLS (``interp.stats.interaction``): ``slopes`` (prompt
    intercepts and per-prompt model and emoji effects: the paired design), ``intercept`` or ``none``."""
    neutral_equal_var: bool = False
    """Emoji-vs-neutral interaction with a pooled variance (plain OLS) instead of Welch's test."""
    log2fc_epsilon: float = 1e-3
    """Added to mean |act| before the log2 fold change. SmolLM2-135M's neurons have mean |mean
    act| of 0.015 (1st percentile) to 0.05 (median) on emoji texts, so 1e-3 leaves real neurons'
    ratios alone and only bounds those of neurons that are ~0 in one model."""
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    """Definitions of the neuron classes."""
    block_size: int = 8192
    """Neurons tested per block: bounds memory to ~(6 x n_prompts x block_size) float64 values."""

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        object.__setattr__(self, "correction", resolve_correction(self.correction))
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.prompt_effects not in PROMPT_EFFECTS:
            raise ValueError(f"prompt_effects must be one of {PROMPT_EFFECTS}, got {self.prompt_effects!r}")
        if not self.log2fc_epsilon > 0:
            raise ValueError(f"log2fc_epsilon must be > 0, got {self.log2fc_epsilon}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")


@dataclass(frozen=True, eq=False)
class DiffResult:
    """The neuron table of a diff and what it was computed from."""

    table: pd.DataFrame
    """One row per neuron, ranked by |interaction| (columns: docs/DESIGN.md, ``TESTS``)."""
    config: DiffConfig
    """The configuration used."""
    corrections: tuple[CorrectionSummary, ...]
    """p < alpha vs q < alpha counts, one per test."""
    quiet_threshold: float
    """Base mean |act| below which a neuron counted as quiet."""
    provenance: dict[str, Any]
    """Inputs: cache paths, models, template, prompt counts."""

    def top(self, k: int = 20, by: str = "interaction") -> pd.DataFrame:
        """The ``k`` neurons with the smallest ``by`` for p/q columns, else the largest |``by``|."""
        if by not in self.table.columns:
            raise ValueError(f"no column {by!r}; choose one of {list(self.table.columns)}")
        if by.startswith(("p_", "q_")):
            return self.table.nsmallest(k, by)
        return self.table.loc[self.table[by].abs().nlargest(k).index]

    def class_flags(self) -> pd.DataFrame:
        """One bool column per class (a neuron can be in several)."""
        return self.table[[f"is_{name}" for name in CLASSES]].rename(columns=lambda c: c.removeprefix("is_"))

    def counts_by_layer(self) -> pd.DataFrame:
        """Neurons per class in each layer (a neuron counts in every class it is in)."""
        return count_by_layer(self.table["layer"], self.class_flags())

    def class_overlaps(self) -> list[OverlapResult]:
        """Hypergeometric overlap of every pair of class sets."""
        return pairwise_overlaps(self.class_flags())

    def neurons(self, class_name: str) -> list[tuple[int, int]]:
        """``(layer, index)`` of the neurons in ``class_name``."""
        if class_name not in CLASSES:
            raise ValueError(f"unknown class {class_name!r}; choose one of {CLASSES}")
        rows = self.table[self.table[f"is_{class_name}"]]
        return list(zip(rows["layer"].tolist(), rows["index"].tolist()))

    def summary(self) -> dict[str, Any]:
        """JSON-able account of the diff: config, inputs, class counts, per-test corrections."""
        flags = self.class_flags()
        by_layer = self.counts_by_layer()
        return jsonable({
            "schema": SUMMARY_SCHEMA,
            "config": asdict(self.config),
            "inputs": self.provenance,
            "n_neurons": len(self.table),
            "quiet_threshold": self.quiet_threshold,
            "counts": {name: int(flags[name].sum()) for name in CLASSES},
            "labels": {name or "none": int(n) for name, n in self.table["class"].value_counts().items()},
            "counts_by_layer": {int(layer): row.to_dict() for layer, row in by_layer.iterrows()},
            "tests": {s.test: {"description": TESTS[s.test], **asdict(s)} for s in self.corrections},
            "class_overlaps": [asdict(overlap) for overlap in self.class_overlaps()],
        })

    def save(self, out_csv: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path]:
        """Write the table to ``out_csv`` and the summary beside it (``.json``), each atomically."""
        paths = save_table_and_summary(self.table, self.summary(), out_csv, overwrite)
        log.info("wrote %s and %s", *paths)
        return paths


def _per_neuron_columns(inputs: DiffInputs, config: DiffConfig) -> dict[str, np.ndarray]:
    """Run ``block_statistics`` over blocks of the flattened (layer, neuron) axis."""
    arrays = {name: getattr(inputs, name) for name in CELLS if getattr(inputs, name) is not None}
    flat = {name: array.reshape(array.shape[0], -1) for name, array in arrays.items()}
    n_neurons = flat["base_emoji"].shape[1]
    starts = range(0, n_neurons, config.block_size)
    blocks = []
    for start in tqdm(starts, desc="diff", unit="block", disable=len(starts) < 2, leave=False):
        stop = min(start + config.block_size, n_neurons)
        cells = {name: array[:, start:stop].astype(np.float64) for name, array in flat.items()}
        blocks.append(block_statistics(cells, prompt_effects=config.prompt_effects,
                                       neutral_equal_var=config.neutral_equal_var,
                                       log2fc_epsilon=config.log2fc_epsilon))
    return {name: np.concatenate([block[name] for block in blocks]) for name in blocks[0]}


def diff_arrays(inputs: DiffInputs, config: DiffConfig | None = None) -> DiffResult:
    """Steps 2-4 of the module docstring on activations already in memory."""
    config = config or DiffConfig()
    _, n_layers, d_mlp = inputs.base_emoji.shape
    columns = _per_neuron_columns(inputs, config)
    table_columns: dict[str, np.ndarray] = {
        "layer": np.repeat(np.asarray(inputs.layers, dtype=np.int64), d_mlp),
        "index": np.tile(np.arange(d_mlp, dtype=np.int64), n_layers),
    }
    corrections = []
    for name, values in columns.items():
        table_columns[name] = values
        if name.startswith("p_"):
            test = name.removeprefix("p_")
            q = adjust_pvalues(values, config.correction)
            table_columns[f"q_{test}"] = q
            corrections.append(summarize_correction(test, values, q, config.alpha, config.correction))
    table = pd.DataFrame(table_columns)
    classes = classify_neurons(table, config.classify, config.alpha)
    table["class"] = classes.labels
    for name in CLASSES:
        table[f"is_{name}"] = classes.flags[name]
    order = np.argsort(-np.abs(table["interaction"].to_numpy()), kind="stable")
    table = table.iloc[order].reset_index(drop=True)
    for summary in corrections:
        log.info("%s: %d neurons with p < %g, %d with q < %g (%s)", summary.test, summary.n_uncorrected,
                 config.alpha, summary.n_corrected, config.alpha, summary.method)
    return DiffResult(table, config, tuple(corrections), classes.quiet_threshold, dict(inputs.provenance))


def diff(base: SetSources, merged: SetSources, config: DiffConfig | None = None) -> DiffResult:
    """Compare the base and merged model neuron by neuron.

    ``base`` and ``merged`` are each a directory holding ``emoji.h5``, ``emoji-free.h5`` and
    optionally ``neutral.h5``, or a mapping like ``{"emoji": path, "emoji-free": path,
    "neutral": path}``. Example::

        result = diff("runs/base", "runs/merged", DiffConfig(correction="fdr_by"))
        result.top(10)
        result.save("neurons.csv")
    """
    config = config or DiffConfig()
    return diff_arrays(load_diff_inputs(base, merged, config.reduction), config)
