"""Does a neuron track the behaviour across training checkpoints? Per-neuron HAC regression.

1. For checkpoint t = 1..T (in training order) take x[t, j] = mean over prompts of neuron j's
   reduction, and the behaviour metric y[t] (e.g. emoji rate).
2. Fit y = a + b x by OLS for every neuron at once: b = S_xy / S_xx, a = mean(y) - b mean(x).
3. Newey-West HAC variance of b, because checkpoints of one run are autocorrelated. statsmodels'
   sandwich is (X'X)^-1 S (X'X)^-1 with S = sum over lags of kernel-weighted autocovariances of
   the scores x_t u_t; its (b, b) entry only needs h_t = u_t (x_t - mean x) / S_xx (row b of
   (X'X)^-1 applied to the score), giving
   Var(b) = sum_t h_t^2 + 2 sum_{l=1..L} w_l sum_t h_t h_{t-l}, Bartlett w_l = 1 - l / (L + 1),
   times T / (T - 2) with ``use_correction`` - all as (T, n_neurons) array operations.
4. z = b / se with a normal reference (statsmodels' default for HAC), or t with T - 2 df.
5. Correct across neurons; the significant set can be compared with any other neuron set (e.g. a
   diff class) by the hypergeometric overlap test.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from interp.stats.config import RegressConfig
from interp.stats.loading import check_same_layout, check_same_prompts, load_cache
from interp.stats.multiple import CorrectionSummary, adjust_pvalues, summarize_correction
from interp.stats.output import jsonable, save_table_and_summary
from interp.stats.overlap import OverlapResult, overlap_sets

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = "neurodiff.regress/1"


def newey_west_lags(n_obs: int) -> int:
    """Newey-West's automatic lag count floor(4 (T / 100)^(2/9)), as statsmodels uses."""
    return int(math.floor(4 * (n_obs / 100.0) ** (2.0 / 9.0)))


class HacFit(NamedTuple):
    """Per-neuron simple regression of the metric on the activation."""

    slope: np.ndarray
    """b: change in metric per unit of activation (nan for a neuron constant across checkpoints)."""
    intercept: np.ndarray
    """a."""
    se: np.ndarray
    """HAC standard error of b."""
    statistic: np.ndarray
    """b / se (z, or t with ``use_t``)."""
    p: np.ndarray
    """Two-sided p-value (1 for constant neurons: no evidence)."""
    r2: np.ndarray
    """Squared correlation of metric and activation."""


def hac_regression(
    x: np.ndarray, y: np.ndarray, maxlags: int, kernel: str = "bartlett", use_correction: bool = False,
    use_t: bool = False,
) -> HacFit:
    """Steps 2-4 of the module docstring: x (T, n_neurons) activations, y (T,) metric."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n_obs = x.shape[0]
    if y.shape != (n_obs,):
        raise ValueError(f"metric has shape {y.shape}; need one value per checkpoint ({n_obs})")
    if n_obs < 3:
        raise ValueError(f"need at least 3 checkpoints to fit a slope with an error, got {n_obs}")
    if maxlags >= n_obs:
        raise ValueError(f"maxlags={maxlags} needs more than {maxlags} checkpoints, got {n_obs}")
    x_centred = x - x.mean(axis=0)
    y_centred = y - y.mean()
    s_xx = (x_centred**2).sum(axis=0)
    constant = s_xx <= 1e-300
    safe_s_xx = np.where(constant, 1.0, s_xx)
    slope = (x_centred * y_centred[:, None]).sum(axis=0) / safe_s_xx
    intercept = y.mean() - slope * x.mean(axis=0)
    resid = y_centred[:, None] - slope * x_centred
    h = resid * x_centred / safe_s_xx  # (T, m) influence of each checkpoint on b

    weights = np.ones(maxlags + 1) if kernel == "uniform" else 1.0 - np.arange(maxlags + 1) / (maxlags + 1.0)
    var = (h**2).sum(axis=0)
    for lag in range(1, maxlags + 1):
        var += 2.0 * weights[lag] * (h[lag:] * h[:-lag]).sum(axis=0)
    if use_correction:
        var *= n_obs / (n_obs - 2.0)
    se = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = np.where(se > 0, slope / se, np.where(slope == 0, 0.0, np.inf * np.sign(slope)))
        r2 = 1.0 - (resid**2).sum(axis=0) / (y_centred**2).sum()
    reference = stats.t(n_obs - 2) if use_t else stats.norm
    p = 2.0 * reference.sf(np.abs(statistic))
    nan = np.full_like(slope, np.nan)
    return HacFit(
        slope=np.where(constant, nan, slope),
        intercept=np.where(constant, nan, intercept),
        se=np.where(constant, nan, se),
        statistic=np.where(constant, 0.0, statistic),
        p=np.where(constant, 1.0, p),
        r2=np.where(constant, 0.0, r2),
    )


@dataclass(frozen=True, eq=False)
class RegressResult:
    """Per-neuron regression of a metric on activation across checkpoints."""

    table: pd.DataFrame
    """One row per neuron (layer, index, slope, se, p, q, ...), most significant first."""
    config: RegressConfig
    """The configuration used."""
    maxlags: int
    """HAC lags actually used."""
    metric: tuple[float, ...]
    """The metric at each checkpoint."""
    correction: CorrectionSummary
    """p < alpha vs q < alpha counts."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Cache paths and models per checkpoint."""
    comparisons: tuple[OverlapResult, ...] = ()
    """Overlaps recorded with ``with_comparison``."""

    def significant(self) -> list[tuple[int, int]]:
        """``(layer, index)`` of neurons with q < alpha."""
        rows = self.table[self.table["q"] < self.config.alpha]
        return list(zip(rows["layer"].tolist(), rows["index"].tolist()))

    def universe(self) -> list[tuple[int, int]]:
        return list(zip(self.table["layer"].tolist(), self.table["index"].tolist()))

    def compare(self, neurons: Collection[tuple[int, int]], name: str = "other") -> OverlapResult:
        """Hypergeometric overlap of the significant set with ``neurons``."""
        return overlap_sets(self.significant(), neurons, self.universe(), "regress_significant", name)

    def with_comparison(self, neurons: Collection[tuple[int, int]], name: str) -> RegressResult:
        """A copy that also records the overlap with ``neurons`` in its summary."""
        return RegressResult(self.table, self.config, self.maxlags, self.metric, self.correction,
                             self.provenance, (*self.comparisons, self.compare(neurons, name)))

    def summary(self) -> dict[str, Any]:
        return jsonable({
            "schema": SUMMARY_SCHEMA,
            "config": asdict(self.config),
            "maxlags": self.maxlags,
            "metric": list(self.metric),
            "inputs": self.provenance,
            "n_neurons": len(self.table),
            "correction": asdict(self.correction),
            "comparisons": [asdict(overlap) for overlap in self.comparisons],
        })

    def save(self, out_csv: str | os.PathLike, overwrite: bool = False) -> tuple[Path, Path]:
        """Write the table (CSV) and the summary (same name, ``.json``), each atomically."""
        return save_table_and_summary(self.table, self.summary(), out_csv, overwrite)


def regress_arrays(
    acts: np.ndarray, metric: Sequence[float], layers: Sequence[int] | None = None,
    config: RegressConfig | None = None, provenance: dict[str, Any] | None = None,
) -> RegressResult:
    """Steps 2-5 on per-checkpoint activations ``acts`` (T, n_layers, d_mlp) already averaged over prompts."""
    config = config or RegressConfig()
    acts = np.asarray(acts)
    if acts.ndim != 3:
        raise ValueError(f"acts must be (n_checkpoints, n_layers, d_mlp), got shape {acts.shape}")
    n_obs, n_layers, d_mlp = acts.shape
    if len(metric) != n_obs:
        raise ValueError(f"{len(metric)} metric values for {n_obs} checkpoints; pass one per checkpoint")
    layers = tuple(range(n_layers)) if layers is None else tuple(layers)
    maxlags = newey_west_lags(n_obs) if config.maxlags is None else config.maxlags
    fit = hac_regression(acts.reshape(n_obs, -1), np.asarray(metric, dtype=np.float64), maxlags,
                         config.kernel, config.use_correction, config.use_t)
    q = adjust_pvalues(fit.p, config.correction)
    flat = acts.reshape(n_obs, -1)
    table = pd.DataFrame({
        "layer": np.repeat(np.asarray(layers, dtype=np.int64), d_mlp),
        "index": np.tile(np.arange(d_mlp, dtype=np.int64), n_layers),
        "mean_act": flat.mean(axis=0),
        "sd_act": flat.std(axis=0, ddof=1),
        "slope": fit.slope,
        "intercept": fit.intercept,
        "se": fit.se,
        "statistic": fit.statistic,
        "r2": fit.r2,
        "p": fit.p,
        "q": q,
    })
    table = table.sort_values(["p", "r2"], ascending=[True, False], kind="stable").reset_index(drop=True)
    return RegressResult(table, config, maxlags, tuple(float(m) for m in metric),
                         summarize_correction("regress", fit.p, q, config.alpha, config.correction),
                         dict(provenance or {}))


def regress(
    caches: Sequence[str | os.PathLike], metric: Sequence[float], config: RegressConfig | None = None
) -> RegressResult:
    """Regress ``metric`` on every neuron across checkpoint ``caches`` (in training order), e.g.
    ``regress(["ckpt100/emoji.h5", "ckpt200/emoji.h5", ...], [0.0, 0.1, ...])``."""
    config = config or RegressConfig()
    if len(caches) != len(metric):
        raise ValueError(f"{len(caches)} caches but {len(metric)} metric values; pass one metric per cache")
    means, first = [], None
    for i, path in enumerate(caches):
        loaded = load_cache(path, f"checkpoint {i}", config.reduction)
        if first is None:
            first = loaded
        else:
            check_same_layout([first, loaded])
            check_same_prompts(first, loaded)
        means.append(np.nanmean(loaded.acts.astype(np.float64)[loaded.defined[config.reduction]], axis=0))
        loaded = None  # keep one checkpoint's full activations in memory at a time
    provenance = {"caches": [str(path) for path in caches], "n_prompts": len(first.prompt_ids) if first else 0,
                  "template": first.attrs.get("template") if first else None}
    layers = first.layers if first else None
    return regress_arrays(np.stack(means), metric, layers, config, provenance)


def read_manifest(path: str | os.PathLike) -> tuple[list[Path], list[float]]:
    """Checkpoints from a manifest: CSV with columns ``cache,metric`` or JSON list of
    ``{"cache": ..., "metric": ...}``; relative cache paths are relative to the manifest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    if path.suffix == ".json":
        rows = json.loads(path.read_text())
    else:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    fields = {"cache", "metric"}
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and fields <= set(r) for r in rows):
        raise ValueError(f"{path} must list checkpoints with 'cache' and 'metric' fields (CSV header cache,metric, "
                         "or a JSON list of objects)")
    caches = [Path(r["cache"]) if Path(r["cache"]).is_absolute() else path.parent / r["cache"] for r in rows]
    try:
        metric = [float(r["metric"]) for r in rows]
    except ValueError as error:
        raise ValueError(f"{path}: a metric value is not a number ({error})") from None
    return caches, metric
