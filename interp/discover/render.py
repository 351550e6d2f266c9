"""A discovery as report blocks, from its ``discovery.json`` payload (no torch: the report renders it)."""

from __future__ import annotations

from interp.report.blocks import Block, Heading, Paragraph, Table

STEERED_REPLIES_SHOWN = 8


HEADER = ["token", "piece", "score", "95% interval", "sign-flip z", "vocabulary z / fold", "stands out"]


def _token_rows(tokens: list[dict]) -> list[list[str]]:
    return [[repr(t["token"]), t["piece"], f"{t['score']:.3g}", f"{t['low']:.3g} to {t['high']:.3g}", f"{t['z']:.2f}",
             f"{t['vocabulary_z']:.1f}" if t.get("fold") is None else f"x{t['fold']:.3g}",
             "yes" if t["stands_out"] else "",
             *([f"{c['score']:.3g} (z {c['z']:.2f}, x{c['fold']:.3g})"] if (c := t.get("control")) else [])]
            for t in tokens]


def _shift_table(tokens: list[dict]) -> Table:
    controlled = any(t.get("control") for t in tokens)
    return Table([*HEADER, *(["against the control: score (z, fold)"] if controlled else [])], _token_rows(tokens))


def discovery_blocks(found: dict) -> list[Block]:
    """Summary, promoted and demoted tokens, per-layer differences, carrying neurons and steered replies."""
    header = HEADER
    blocks: list[Block] = [
        Heading("Discovery: what the fine-tune changed"), Paragraph(found["summary"]),
        Heading(f"Promoted tokens (layer {found['read_layer']})", 3), Table(header, _token_rows(found["tokens"]["promoted"])),
        Heading("Demoted tokens", 3), Table(header, _token_rows(found["tokens"]["demoted"])),
        *([Heading("What the tuned model now writes: probability moved on its own replies", 3),
           _shift_table(found["shift"]["promoted"]),
           Heading("Probability it took away", 3), _shift_table(found["shift"]["demoted"])]
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
    if found.get("tuned_replies"):
        shown = min(STEERED_REPLIES_SHOWN, len(found["tuned_replies"]))
        blocks += [Heading("What each model wrote to the same neutral questions (same random numbers)", 3),
                   Table(["tuned", "base"], [[t, b] for t, b in zip(found["tuned_replies"][:shown],
                                                                    found["base_replies"][:shown])])]
    runs = [(f"reply difference at layer {found.get('reply_steer_layer')}", s) for s in found.get("reply_steering", [])]
    runs += [(f"corpus difference at layer {found['read_layer']}", s) for s in found["steering"]]
    choice = found.get("behavior_steering")
    if choice:
        blocks += [Heading("Where to steer with the behaviour's difference: chosen on "
                           f"{choice['n_selection_questions']} selection questions", 3),
                   Table(["layer", "alpha", "show the tokens", "repetition loops", "show them outside a loop", "chosen"],
                         [[s["layer"], f"{s['alpha']:g}", f"{s['shown']}/{len(s['replies'])}", s["loops"], s["clean"],
                           "yes" if s["alpha"] > 0 and (s["layer"], s["alpha"]) == (choice["layer"], choice["alpha"])
                           else ""] for s in choice["grid"]])]
        runs += [(f"difference where the tuned model raised the behaviour's tokens, layer {choice['layer']}, "
                  "on questions not used to choose it", s) for s in choice["confirmed"]]
    for label, s in runs:
        loops = f", {s['loops']} in a repetition loop" if s.get("loops") else ""
        blocks += [Heading(f"Steered base ({label}), alpha {s['alpha']:g}: {s['shown']}/{len(s['replies'])} replies "
                           f"show the discovered tokens{loops}", 3),
                   Table(["reply"], [[r] for r in s["replies"][:STEERED_REPLIES_SHOWN]])]
    return blocks
