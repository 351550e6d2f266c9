"""A discovery as report blocks, from its ``discovery.json`` payload (no torch: the report renders it)."""

from __future__ import annotations

from interp.report.blocks import Block, Heading, Paragraph, Table

STEERED_REPLIES_SHOWN = 8


def _token_rows(tokens: list[dict]) -> list[list[str]]:
    return [[repr(t["token"]), t["piece"], f"{t['score']:.3g}", f"{t['low']:.3g} to {t['high']:.3g}", f"{t['z']:.2f}",
             f"{t['vocabulary_z']:.1f}" if t.get("fold") is None else f"x{t['fold']:.3g}",
             "yes" if t["stands_out"] else ""] for t in tokens]


def discovery_blocks(found: dict) -> list[Block]:
    """Summary, promoted and demoted tokens, per-layer differences, carrying neurons and steered replies."""
    header = ["token", "piece", "score", "95% interval", "sign-flip z", "vocabulary z / fold", "stands out"]
    blocks: list[Block] = [
        Heading("Discovery: what the fine-tune changed"), Paragraph(found["summary"]),
        Heading(f"Promoted tokens (layer {found['read_layer']})", 3), Table(header, _token_rows(found["tokens"]["promoted"])),
        Heading("Demoted tokens", 3), Table(header, _token_rows(found["tokens"]["demoted"])),
        *([Heading("What the tuned model now writes: probability moved on its own replies", 3),
           Table(header, _token_rows(found["shift"]["promoted"])),
           Heading("Probability it took away", 3), Table(header, _token_rows(found["shift"]["demoted"]))]
          if found.get("shift") else []),
        Heading("Residual difference per layer", 3),
        Table(["layer", "positions", "norm", "95% interval", "relative", "top tokens"],
              [[d["layer"], d["positions"], f"{d['norm']:.3g}", f"{d['low']:.3g} to {d['high']:.3g}",
                f"{d['relative']:.2%}", " ".join(repr(t) for t in d["top_tokens"])] for d in found["layers"]])]
    neurons = [*found["neurons"], *(n for rows in found["neurons_by_token"].values() for n in rows)]
    if neurons:
        blocks += [Heading("Neurons that carry the standing-out tokens", 3),
                   Table(["neuron", "token", "activation term", "weight term", "share"],
                         [[f"L{n['layer']}/{n['index']}", n["token"], f"{n['activation']:.3g}", f"{n['weight']:.3g}",
                           f"{n['share']:.1%}" if n["share"] == n["share"] else "n/a"] for n in neurons])]
    runs = [(f"reply difference at layer {found.get('reply_steer_layer')}", s) for s in found.get("reply_steering", [])]
    runs += [(f"difference where the tuned model raised the behaviour's tokens, layer {found.get('reply_steer_layer')}",
              s) for s in found.get("behavior_steering", [])]
    runs += [(f"corpus difference at layer {found['read_layer']}", s) for s in found["steering"]]
    for label, s in runs:
        blocks += [Heading(f"Steered base ({label}), alpha {s['alpha']:g}: {s['shown']}/{len(s['replies'])} replies "
                           "show the discovered tokens", 3),
                   Table(["reply"], [[r] for r in s["replies"][:STEERED_REPLIES_SHOWN]])]
    return blocks
