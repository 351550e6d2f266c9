"""The report's figures, each a function from plain data to a PNG file.

Inputs are the same JSON-able structures that ``summary.json`` holds (and the neuron table), so a
report can be rebuilt from stage outputs alone. matplotlib runs headless (Agg).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

CLASS_COLORS = {
    "activated": "#d62728",
    "amplified": "#ff7f0e",
    "suppressed": "#1f77b4",
    "emoji_specific": "#2ca02c",
    "": "#b0b0b0",
}


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def volcano(table: pd.DataFrame, effect: str, q: str, path: Path, alpha: float = 0.05) -> Path:
    """Effect size vs -log10 q for every neuron, coloured by class (outliers in black)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    classes = table["class"].fillna("") if "class" in table else pd.Series("", index=table.index)
    neg_log_q = -np.log10(np.clip(table[q].to_numpy(dtype=float), 1e-300, 1.0))
    for name in ["", *[c for c in CLASS_COLORS if c]]:
        mask = (classes == name).to_numpy()
        if mask.any():
            ax.scatter(table[effect].to_numpy()[mask], neg_log_q[mask], s=4 if name == "" else 9,
                       c=CLASS_COLORS.get(name, "#9467bd"), alpha=0.5 if name == "" else 0.9,
                       label=name or "not flagged", rasterized=True)
    if "outlier" in table:
        outlier = table["outlier"].astype(bool).to_numpy()
        ax.scatter(table[effect].to_numpy()[outlier], neg_log_q[outlier], s=30, marker="x", c="k", label="outlier")
    ax.axhline(-np.log10(alpha), color="k", lw=0.8, ls="--", label=f"q = {alpha}")
    ax.set_xlabel(effect)
    ax.set_ylabel(f"-log10 {q}")
    ax.set_title(f"{len(table):,} neurons")
    ax.legend(fontsize=7, markerscale=2, loc="upper left")
    return _save(fig, path)


def layer_counts(per_layer: Mapping[str, Sequence[int]], layers: Sequence[int], path: Path) -> Path:
    """Flagged neurons per layer, one bar group per class."""
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    names = [name for name in per_layer if any(per_layer[name])] or list(per_layer)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(layers))
    for i, name in enumerate(names):
        ax.bar(x + i * width, per_layer[name], width, label=name, color=CLASS_COLORS.get(name, None))
    ax.set_xticks(x + 0.4 - width / 2, [str(layer) for layer in layers], fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("neurons")
    ax.legend(fontsize=8)
    return _save(fig, path)


def pareto(conditions: Sequence[Mapping[str, Any]], choice: Mapping[str, Any] | None, path: Path,
           noun: str) -> Path:
    """Target mass removed vs neutral KL for every swept condition: each ranking's top-k sets as a line
    per intervention, matched random sets as grey points, the suppressor's choice starred."""
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    floor = 1e-6  # KL axis is logarithmic; an exactly-zero KL is drawn at the floor
    randoms = [c for c in conditions if c["kind"] == "random"]
    if randoms:
        ax.scatter([max(c["kl_neutral"], floor) for c in randoms], [c["reduction"] for c in randoms], s=14,
                   color="#999999", alpha=0.7, label=f"matched random sets ({len(randoms)})", zorder=2)
    styles = {"mean": "-", "zero": "--", "resample": ":", "patch": "-."}
    colours = {"selective": "#d62728", "specific": "#1f77b4"}
    tops = [c for c in conditions if c["kind"] == "top"]
    for ranking in dict.fromkeys(c["ranking"] for c in tops):
        for mode in dict.fromkeys(c["intervention"] for c in tops if c["ranking"] == ranking):
            line = sorted((c for c in tops if c["ranking"] == ranking and c["intervention"] == mode), key=lambda c: c["k"])
            ax.plot([max(c["kl_neutral"], floor) for c in line], [c["reduction"] for c in line],
                    ls=styles.get(mode, "-"), marker="o", ms=3, color=colours.get(ranking, "#2ca02c"),
                    label=f"{ranking}, {mode}", zorder=3)
    if choice:
        m = choice["metrics"]
        ax.scatter([max(m["kl_neutral"], floor)], [m["reduction"]], marker="*", s=180, color="#ff7f0e",
                   edgecolor="k", zorder=4, label=f"suppressor (k = {choice['k']})")
    ax.set_xscale("log")
    ax.set_xlabel("neutral next-token KL (nats per token, proxy)")
    ax.set_ylabel(f"share of {noun} mass removed (proxy)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def behaviour_bars(behavior: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], path: Path) -> Path:
    """Base vs merged on each behaviour metric (``{value, low, high}`` estimates), 95% intervals."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        models = [name for name in ("base", "merged") if name in behavior]
        values = [behavior[name][metric]["value"] for name in models]
        cis = [(behavior[name][metric]["low"], behavior[name][metric]["high"]) for name in models]
        err = np.array([[v - lo for v, (lo, _) in zip(values, cis)], [hi - v for v, (_, hi) in zip(values, cis)]])
        ax.bar(models, values, yerr=np.clip(err, 0, None), color=["#7f7f7f", "#d62728"][: len(models)], capsize=4)
        ax.set_title(metric.replace("_", " "), fontsize=10)
    return _save(fig, path)


def attribution_scatter(exact: Sequence[float], estimate: Sequence[float], rho: float, path: Path) -> Path:
    """Attribution-patching estimates against exact single-neuron patching effects."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.scatter(exact, estimate, s=12, color="#1f77b4")
    lims = [min(min(exact), min(estimate)), max(max(exact), max(estimate))]
    ax.plot(lims, lims, color="k", lw=0.8, ls=":")
    ax.set_xlabel("exact effect (patching)")
    ax.set_ylabel("attribution estimate")
    ax.ticklabel_format(style="sci", axis="both", scilimits=(-2, 3))  # effects are ~1e-5: no crowded labels
    ax.set_title(f"Spearman rho = {rho:.2f}")
    return _save(fig, path)


def where_curves(rows: Sequence[Mapping[str, Any]], path: Path, noun: str) -> Path:
    """Share of the fine-tune's change removed (noising) and restored (denoising) against set size: each
    ranking's top-k sets as a line, the chosen set starred, matched random sets grey, the all-MLP
    bound dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0), sharey=True)
    colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    for ax, direction in zip(axes, ("noising", "denoising")):
        mine = [r for r in rows if r["direction"] == direction]
        tops = [r for r in mine if r["family"] == "top"]
        for colour, name in zip(colours, dict.fromkeys(r["name"] for r in tops)):
            line = sorted((r for r in tops if r["name"] == name), key=lambda r: r["k"])
            ax.errorbar([r["k"] for r in line], [r["share"] for r in line],
                        yerr=[[r["share"] - r["low"] for r in line], [r["high"] - r["share"] for r in line]],
                        marker="o", ms=3, capsize=2, color=colour, label=name)
        random = [r for r in mine if r["family"] == "random"]
        if random:
            ax.scatter([r["k"] for r in random], [r["share"] for r in random], s=14, color="#999999", alpha=0.7,
                       label=f"matched random sets ({len(random)})", zorder=2)
        for r in mine:
            if r["family"] == "chosen":
                ax.scatter([r["k"]], [r["share"]], marker="*", s=180, color="#ff7f0e", edgecolor="k", zorder=4,
                           label=f"chosen set (k = {r['k']})")
            if r["family"] == "bound":
                ax.axhline(r["share"], ls="--", color="k", lw=1, label="all MLP neurons")
        ax.axhline(0, color="#cccccc", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("neurons patched (k)")
        ax.set_title(f"{direction}: " + ("merged <- base values" if direction == "noising" else "base <- merged values"),
                     fontsize=9)
    axes[0].set_ylabel(f"share of the fine-tune's change in {noun} probability")
    axes[1].legend(fontsize=7, loc="best")
    return _save(fig, path)


def where_layers(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The layer profile: every neuron of one layer patched at a time, in both directions."""
    fig, ax = plt.subplots(figsize=(7.2, 3.4))
    for offset, (direction, colour) in enumerate((("noising", "#d62728"), ("denoising", "#1f77b4"))):
        layer_rows = sorted((r for r in rows if r["direction"] == direction and r["family"] == "layer"),
                            key=lambda r: r["layer"])
        x = np.array([r["layer"] for r in layer_rows]) + (offset - 0.5) * 0.4
        ax.bar(x, [r["share"] for r in layer_rows], width=0.4, color=colour, label=direction,
               yerr=[[r["share"] - r["low"] for r in layer_rows], [r["high"] - r["share"] for r in layer_rows]],
               error_kw={"lw": 0.6})
    ax.axhline(0, color="#999999", lw=0.8)
    ax.set_xlabel("layer (all its MLP neurons patched)")
    ax.set_ylabel("share of the change")
    ax.legend(fontsize=8)
    return _save(fig, path)
