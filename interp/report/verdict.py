"""The suppression verdict's criteria and its side effects where the model writes, as report blocks
(``interp.causal.suppression``, ``interp.causal.intactness``)."""

from __future__ import annotations

from interp.report.blocks import Block, Paragraph, Table

_INTACT_WORDS = {
    "kl_reference_answers": "KL per token, reference answers",
    "kl_own_replies": "KL per token, merged model's own replies (targets masked)",
    "ppl_reference_answers": "perplexity ratio, reference answers",
    "capability": "capability probe accuracy change",
}
_MARKER_WORDS = {"exclamations": "exclamation marks per reply", "words": "words per reply",
                 "distinct_bigrams": "distinct bigram share", "rate": "behaviour rate (not judged)"}


def _interval(i: dict, fmt: str = ".3f", scale: float = 1.0, sign: str = "") -> str:
    f = lambda v: format(scale * v, sign + fmt)  # noqa: E731
    return f"{f(i['value'])} [{f(i['low'])}, {f(i['high'])}]"


def _intact_measure(name: str, intact: dict) -> tuple[str, str, str]:
    """(required, measured, ruled out) for one of the intactness criteria."""
    c = intact["criteria"]
    ruled = "yes" if intact["ruled_out"].get(name) else "no"
    if name.startswith("kl_"):
        which = intact["reference" if "reference" in name else "own"]
        return f"<= {c['max_kl']:g} nats", _interval(which["kl"], ".4f"), ruled
    if name == "ppl_reference_answers":
        return f"within x(1 ± {c['max_ppl_change']:g})", _interval(intact["reference"]["ppl_ratio"]), ruled
    if name == "capability":
        return (f"within ±{100 * c['max_capability_change']:.0f} points",
                _interval(intact["capability"]["accuracy_difference"], ".1f", 100, "+"), ruled)
    marker, where = name.rsplit("_", 1)
    change = intact[f"{where}_style"][marker]["change"]
    return f"within ±{100 * c['max_style_change']:.0f}%", _interval(change, ".0f", 100, "+") + "%", ruled


def criterion(name: str, verdict: dict) -> tuple[str, str]:
    """What the verdict's criterion ``name`` required and what was measured, so a failure reads as a
    shortfall with numbers."""
    c = verdict["criteria"]
    cut = verdict["cut"]
    if name.startswith("intact_") and verdict.get("intactness"):
        return _intact_measure(name[len("intact_"):], verdict["intactness"])[:2]
    fresh = (verdict.get("fresh") or {}).get("cut")
    return {
        "rate_cut": (f">= {100 * c['min_cut']:.0f}%, interval above 0", _interval(cut, ".0f", 100) + "%"),
        "fresh_rate_cut": (f">= {100 * c['min_cut']:.0f}% on fresh questions, interval above 0",
                           _interval(fresh, ".0f", 100) + "%" if fresh else ""),
        "perplexity": (f"within ±{100 * c['max_ppl_change']:.0f}%", f"{100 * verdict['ppl_increase']:+.1f}%"),
        "kl": (f"<= {c['max_kl']:g} nats/token", f"{verdict['kl_neutral']['suppressed']:.4f}"),
        "random_sets": (f">= {100 * c['min_random_beaten']:.0f}% beaten", f"{100 * verdict['random_beaten']:.0f}%"),
    }.get(name, ("", ""))


def intactness_blocks(verdict: dict, noun: str) -> list[Block]:
    """Side effects where the model writes, each measure with its interval and margin."""
    intact = verdict.get("intactness")
    if not intact:
        return []
    rows = [[_INTACT_WORDS.get(name, name), *_intact_measure(name, intact), "yes" if ok else "NO"]
            for name, ok in intact["checks"].items() if not name.endswith(("_heldout", "_neutral"))]
    style_rows = []
    for where, label in (("heldout", "held-out questions"), ("neutral", "neutral prompts")):
        for marker, s in intact[f"{where}_style"].items():
            name = f"{marker}_{where}"
            change = (_interval(s["change"], ".0f", 100, "+") + ("%" if marker != "rate" else " points")
                      if s["change"]["value"] == s["change"]["value"] else "n/a (merged shows none)")
            style_rows.append([label, _MARKER_WORDS.get(marker, marker), f"{s['merged']:.2f}", f"{s['other']:.2f}",
                               change, ("yes" if intact["checks"][name] else "NO") if name in intact["checks"] else "-"])
    cap = intact["capability"]
    return [Paragraph(f"**Otherwise intact, where it writes?** {intact['sentence']} Each measure is paired against the "
                      "merged model (same questions, samples and random streams; the probe's same items) and judged "
                      "two-sided against a margin fixed before the run; 'ruled out' means the whole interval lies "
                      f"inside the margin. Capability probe: {cap['n_items']} cloze items shipped with the project, "
                      f"{cap['right_to_wrong']} right -> wrong and {cap['wrong_to_right']} wrong -> right "
                      f"(exact McNemar p = {cap['mcnemar_p']:.2g})."),
            Table(["measure", "margin", "measured [95%]", "change ruled out", "met"], rows),
            Paragraph(f"Style of sampled replies, merged vs suppressed (relative change of the mean per reply; the "
                      f"{noun} rate as a difference):"),
            Table(["prompts", "marker", "merged", "suppressed", "change [95%]", "met"], style_rows)]


def baseline_blocks(baselines: dict, noun: str) -> list[Block]:
    """The chosen set against baselines that could win (``interp.causal.baselines``)."""
    if not baselines:
        return []
    rows = []
    chosen = next(r for r in baselines["rows"] if r["family"] == "chosen")
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    rows.append(["chosen set", 1, f"{pct(chosen['removal'])} [{pct(chosen['low'])}, {pct(chosen['high'])}]", "-"])
    for family, s in baselines["standing"].items():
        members = [r for r in baselines["rows"] if r["family"] == family]
        removal = (f"{pct(members[0]['removal'])} [{pct(members[0]['low'])}, {pct(members[0]['high'])}]" if len(members) == 1
                   else f"median {pct(sorted(r['removal'] for r in members)[len(members) // 2])}, best {pct(s['best'])}")
        beaten = f"{pct(s['beaten'])} [{pct(s['low'])}, {pct(s['high'])}]"
        if "finite_low" in s:
            beaten += f" (finite sets: [{pct(s['finite_low'])}, {pct(s['finite_high'])}])"
        rows.append([family, s["n"], removal, beaten])
    rank = baselines["rank"]
    return [Paragraph(f"**Against baselines that could win** (proxy: share of the {noun} target mass removed by mean "
                      f"ablation on {baselines['n_contexts']} writing contexts that did not choose the set; intervals "
                      f"bootstrap the contexts). {baselines['sentence']} Rank {rank['value']:.0f} of "
                      f"{rank['out_of']:.0f} [{rank['low']:.0f}, {rank['high']:.0f}]: 1 removes the most."),
            Table(["competitor", "sets", "removal [95%]", "chosen set beats [95%]"], rows)]
