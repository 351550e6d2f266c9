"""The report's section "Where the change lives", from ``causal/where.json`` (``interp.causal.where``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from interp.report import figures
from interp.report.blocks import Block, Figure, Heading, Paragraph, Table


def _share(row) -> str:
    return f"{row['share']:.1%} [{row['low']:.1%}, {row['high']:.1%}]"


def where_blocks(where: dict, fig_dir: Path, noun: str, neuron_cell) -> list[Block]:
    """Blocks of the section; ``neuron_cell(layer, index)`` links a neuron to its page."""
    rows = pd.DataFrame(where["rows"])
    both = rows.pivot_table(index=["family", "name", "k"], columns="direction", values=["share", "low", "high"],
                            aggfunc="first")

    def cells(family: str, name: str, k: int) -> list[str]:
        out = []
        for direction in ("noising", "denoising"):
            try:
                row = {key: both.loc[(family, name, k), (key, direction)] for key in ("share", "low", "high")}
            except KeyError:
                out.append("-")
                continue
            out.append(_share(row) if pd.notna(row["share"]) else "-")
        return out

    listed = rows[rows["family"].isin(["bound", "chosen", "top"])].drop_duplicates(["family", "name", "k"])
    order = {"bound": 0, "chosen": 1, "top": 2}
    listed = listed.assign(order=listed["family"].map(order)).sort_values(["order", "name", "k"])
    table = [[r.name if r.family != "bound" else "all MLP neurons (bound)", r.k, *cells(r.family, r.name, r.k)]
             for r in listed.itertuples()]
    blocks: list[Block] = [
        Heading("Where the change lives"),
        Paragraph(f"{where['sentence']} Noising puts the base model's values into a set of the merged model's "
                  "neurons (how much of the fine-tune's change goes); denoising puts the merged model's values into "
                  "the base model (how much the set alone brings back). Shares are of the change in mean "
                  f"{noun} target probability between the two models, on {where['n_contexts']} writing contexts the "
                  "sweep did not choose on, with bootstrap intervals over contexts. Rankings: `change` (the screen's "
                  "base-value patching estimate), `ablation` (its mean-ablation estimate), `specific` (the diff)."),
        Figure(figures.where_curves(where["rows"], fig_dir / "where_curves.png", noun),
               "Share of the change removed (left) and restored (right) against set size."),
        Table(["set", "k", "noising: share removed", "denoising: share restored"], table),
    ]
    for direction in ("noising", "denoising"):
        random = rows[(rows["family"] == "random") & (rows["direction"] == direction)]
        if len(random):
            blocks.append(Paragraph(
                f"Matched random sets ({direction}, {len(random)} sets of {int(random['k'].iloc[0])}): mean share "
                f"{random['share'].mean():.1%}, range {random['share'].min():.1%} to {random['share'].max():.1%}; "
                f"the chosen set beats {where['random_beaten'][direction]:.0%} of them."))
    classes = rows[(rows["family"] == "class") & (rows["direction"] == "noising")]
    if len(classes):
        table = []
        for name, k in zip(classes["name"], classes["k"]):
            cloud = rows[rows["family"] == f"{name} random"]
            line = [name, int(k), *cells("class", name, k)]
            for direction in ("noising", "denoising"):
                mine = cloud[cloud["direction"] == direction]["share"]
                beaten = where.get("class_random_beaten", {}).get(name, {}).get(direction, float("nan"))
                line.append(f"{mine.mean():.1%} ({len(mine)} sets); beats {beaten:.0%}" if len(mine) else "-")
            table.append(line)
        blocks += [Paragraph("The diff's classes (the paper's activated and amplified neurons), patched as sets, "
                             "each against matched random sets of its own size:"),
                   Table(["class", "k", "noising: share removed", "denoising: share restored",
                          "random sets, noising", "random sets, denoising"], table)]
    layers = rows[rows["family"] == "layer"]
    if len(layers):
        blocks.append(Figure(figures.where_layers(where["rows"], fig_dir / "where_layers.png"),
                             "Layer profile: every MLP neuron of one layer patched at a time."))
    loo = rows[rows["family"] == "leave-one-out"]
    if len(loo):
        chosen = rows[(rows["family"] == "chosen") & (rows["direction"] == "noising")].iloc[0]
        blocks += [Paragraph(f"Leave-one-out (noising): the chosen set removes {_share(chosen)}; without each neuron "
                             "in turn:"),
                   Table(["without", "share removed", "drop"],
                         [[neuron_cell(int(r.layer), int(r.index)), _share(r._asdict()),
                           f"{chosen['share'] - r.share:+.1%}"]
                          for r in loo.sort_values("share").itertuples()])]
    return blocks


def estimator_blocks(screen: dict) -> list[Block]:
    """Each screen estimator against exact values on its own top and a random sample (``interp.causal.estimators``)."""
    checks = screen.get("estimators") or {}
    if not checks:
        return []
    table = []
    for check in checks.values():
        ks = sorted(check["recall"], key=int)
        table.append([check["name"], check["intervention"], check["n_top"], f"{check['spearman_top']:.2f}",
                      f"{check['spearman_sample']:.2f} ({check['n_sample']})",
                      ", ".join(f"@{k} {check['recall'][k]:.0%}" for k in ks),
                      ", ".join(f"@{k} {o['in_sample']} (<= {o['high']:.0f})" for k, o in sorted(check["outside_top"].items(), key=lambda kv: int(kv[0]))),
                      f"{check['underestimate']:.2f}x"])
    first = next(iter(checks.values()))
    return [Paragraph(f"**Are the rankings right where they choose?** Each estimator's own top and a uniform random "
                      f"sample intervened on exactly, one neuron at a time, on the {first['n_contexts']} contexts the "
                      "estimates were recomputed on. Recall@k: of the k strongest exact effects among the measured "
                      "neurons, the share the estimator also ranks in its top k. Outside the top: sampled neurons, not in "
                      "the measured top, whose exact effect beats its k-th strongest (with the upper 95% bound of "
                      "such neurons in the whole model). Exact / estimate: median over the top (above 1: first order "
                      "underestimates)."),
            Table(["estimator", "exact intervention", "top measured", "Spearman on top", "Spearman on sample (n)",
                   "recall", "outside the top: in sample (model-wide bound)", "exact / estimate"], table)]


def steer_blocks(steer: dict, noun: str) -> list[Block]:
    """The base steered by the chosen set's mean change while sampling (``interp.causal.steer``)."""
    rows = pd.DataFrame(steer["rows"])
    pct = lambda r: f"{r['rate']:.0%} [{r['low']:.0%}, {r['high']:.0%}] ({r['shown']}/{r['n']})"  # noqa: E731
    table = []
    for alpha, group in rows.groupby("alpha", sort=True):
        chosen = group[group["family"] == "chosen"]
        direction = group[group["family"] == "direction"]
        random = group[group["family"] == "random"]
        if alpha == 0:
            base = group.iloc[0]
            table.append(["0 (unsteered)", "-", pct(base), "-", "-"])
            continue
        table.append([f"{alpha:g}", f"{chosen['push'].iloc[0]:.1f}", pct(chosen.iloc[0]),
                      ", ".join(f"{r:.0%}" for r in random["rate"]) or "-",
                      pct(direction.iloc[0]) if len(direction) else "-"])
    merged = steer.get("merged_rate")
    blocks: list[Block] = [
        Paragraph(f"**Sufficiency while sampling.** The base model answers held-out questions with the chosen set's "
                  "neurons moved by alpha times their mean change (merged minus base, over the held-out writing "
                  "contexts), beside matched random sets moved the same way and the difference-of-means residual "
                  "direction at the chosen set's layers with the same push (norm of what the set writes into the "
                  "stream), all sampled with the same random numbers. "
                  + (f"The merged model shows {noun}s in {merged:.0%} of its replies to these questions. " if merged is not None else "")
                  + steer["sentence"]),
        Table(["alpha", "push (residual norm)", f"chosen set: {noun} rate [95%]", "random sets",
               "difference-of-means direction"], table)]
    examples = steer.get("examples", {})
    if examples.get("chosen"):
        blocks.append(Paragraph("Steered replies (chosen set, largest alpha): " +
                                " | ".join(f"\"{text[:160]}\"" for text in examples["chosen"][:2])))
    return blocks
