"""HTML for neuron pages: one static page per neuron and a sortable, filterable index.

Everything is inline (CSS, the index's data and script, the histograms as SVG), so the pages open
from the file system or any static host with no network.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from activations.running import ABS_HIST_EDGES
from interp.pages.data import Distribution, Example, NeuronPage, TokenEffect, page_filename

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif,"Noto Color Emoji";max-width:1100px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right} th{background:#f3f3f3;cursor:pointer}
td.l,th.l{text-align:left} nav a{margin-right:1em} .cols{display:flex;gap:1.5em;flex-wrap:wrap}
.tok{font-family:monospace,"Noto Color Emoji";white-space:pre-wrap;border-radius:2px}
.ex{margin:.25em 0 .6em;padding:.3em;border:1px solid #eee} .ex b{font-size:.8em;color:#555;margin-right:.5em}
.muted{color:#777} input,select{margin-right:.8em}
"""

MODEL_LABELS = {"base": "base", "merged": "tuned"}


def _num(value: float | None, spec: str = ".3g") -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:{spec}}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    head = "".join(f"<th class='l'>{html.escape(h)}</th>" if i < left else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td class='l'>{html.escape(str(c))}</td>" if i < left
                                    else f"<td>{html.escape(str(c))}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _shade(value: float, scale: float) -> str:
    alpha = min(1.0, abs(value) / scale)
    colour = "214,39,40" if value >= 0 else "31,119,180"
    return f"rgba({colour},{alpha:.2f})"


def example_html(example: Example, scale: float) -> str:
    spans = "".join(f"<span class='tok' title='{v:.4g}' style='background:{_shade(v, scale)}'>{html.escape(t)}</span>"
                    for t, v in zip(example.tokens, example.values))
    label = f"{MODEL_LABELS[example.model]} prompt {example.prompt}, peak {example.peak:.3g}"
    return f"<div class='ex' data-model='{example.model}'><b>{html.escape(label)}</b>{spans}</div>"


def histogram_svg(found: Sequence[Distribution], width: int = 520, height: int = 160) -> str:
    """Bars of |a| over content tokens on the cache's log grid, base and tuned side by side, as shares."""
    shown = [d for d in found if d.hist is not None and sum(d.hist) > 0]
    if not shown:
        return "<p class='muted'>The caches kept no |a| histogram (capture with --histogram).</p>"
    shares = [np.asarray(d.hist, float) / sum(d.hist) for d in shown]
    used = np.flatnonzero(np.sum(shares, axis=0) > 0)
    lo, hi = int(used.min()), int(used.max()) + 1
    n_bins, top = hi - lo, max(float(s[lo:hi].max()) for s in shares)
    colours = {"base": "#1f77b4", "merged": "#d62728"}
    bar = (width - 40) / n_bins / len(shown)
    # The legend sits in a band above the bars, the axis labels below them.
    parts = [f"<svg class='hist' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height + 48}'>"
             "<g transform='translate(0,18)'>"]
    for j, (d, share) in enumerate(zip(shown, shares)):
        for i in range(lo, hi):
            h = height * share[i] / top
            x = 30 + ((i - lo) * len(shown) + j) * bar
            parts.append(f"<rect x='{x:.1f}' y='{height - h:.1f}' width='{bar:.1f}' height='{h:.1f}' "
                         f"fill='{colours[d.model]}'><title>{MODEL_LABELS[d.model]}: {share[i]:.3f}</title></rect>")
    parts.append("</g>")
    lower = np.concatenate([[0.0], ABS_HIST_EDGES])  # bin i holds |a| from lower[i] up to the next edge
    parts.append(f"<text x='30' y='{height + 32}' font-size='10'>|a| from {lower[lo]:.0e}</text>")
    parts.append(f"<text x='{width - 10}' y='{height + 32}' font-size='10' text-anchor='end'>"
                 f"to {lower[hi - 1]:.0e} and above (log bins; bar = share of content tokens)</text>")
    for j, d in enumerate(shown):
        parts.append(f"<text x='{width - 110 + 50 * j}' y='12' font-size='11' fill='{colours[d.model]}'>"
                     f"{MODEL_LABELS[d.model]}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _tokens(effects: list[TokenEffect]) -> list[str]:
    return [f"{e.token!r} {e.value:+.3g}" for e in effects]


def _nav(page: NeuronPage, report: str | None) -> str:
    links = []
    if page.previous:
        links.append(f"<a rel='prev' href='{page_filename(*page.previous)}'>&larr; L{page.previous[0]}.N{page.previous[1]}</a>")
    links.append("<a href='index.html'>index</a>")
    if page.next:
        links.append(f"<a rel='next' href='{page_filename(*page.next)}'>L{page.next[0]}.N{page.next[1]} &rarr;</a>")
    if report:
        links.append(f"<a href='{html.escape(report)}'>report</a>")
    return "<nav>" + "".join(links) + "</nav>"


def neuron_html(page: NeuronPage, report: str | None = None) -> str:
    """One neuron's page; ``report`` is the relative link back to the study report (None: no link)."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>neuron {page.name}</title><style>{CSS}</style>"
           f"</head><body>{_nav(page, report)}<h1>Neuron {page.name}</h1>",
           f"<p>class <b>{html.escape(page.neuron_class or 'none')}</b>, diff rank {page.rank or 'unranked'}, on the index as "
           f"{html.escape(', '.join(page.roles))}</p>", "<h2>Statistics in every contrast</h2>",
           _table(["contrast", "estimate [95% CI]", "standardised", "d_z", "q", "q equivalence", "call"],
                  [[s.name, f"{s.estimate:.3g} [{s.interval[0]:.3g}, {s.interval[1]:.3g}]", _num(s.standardised),
                    _num(s.d_z), _num(s.q), _num(s.q_equiv), s.call] for s in page.stats]),
           "<h2>Causal numbers</h2>"]
    c = page.causal
    out.append(_table(["measure", "value"], [
        ["screen estimate (attribution patch)", _num(c.patch_estimate)], ["screen mean estimate", _num(c.mean_estimate)],
        ["exact effect (real ablation)", _num(c.exact_effect)], ["neutral KL of its ablation", _num(c.kl_neutral)],
        ["selectivity", _num(c.selectivity)], ["load-bearing", "n/a" if c.load_bearing is None else str(c.load_bearing)],
        ["screen rank", _num(c.screen_rank, "d") if c.screen_rank else "n/a"],
        ["in the chosen suppressor set", f"yes (#{c.choice_rank})" if c.in_choice else "no"],
        ["leave-one-out (share of the fine-tune's change the chosen set removes, noising)",
         f"{c.leave_one_out:.1%} without it, {c.set_share:.1%} with it" if c.leave_one_out is not None
         else "not measured"]]))
    out.append("<h2>Output tokens (direct logit effect through the final norm)</h2>")
    if page.logits is None:
        out.append("<p class='muted'>Not computed.</p>")
    else:
        lg = page.logits
        columns = [_tokens(x) for x in (lg.promoted_base, lg.demoted_base, lg.promoted_tuned, lg.demoted_tuned,
                                        lg.raised_by_tuning, lg.lowered_by_tuning)]
        out.append(f"<p>Output column changed by {100 * lg.weight_change:.2f}% (relative L2) in the fine-tune.</p>")
        out.append(_table(["base promotes", "base demotes", "tuned promotes", "tuned demotes", "tuning raised",
                           "tuning lowered"], list(zip(*columns)), left=6))
    out.append("<h2>Activation distribution, base vs tuned (content tokens of the reading cache)</h2><div class='cols'>")
    out.append(histogram_svg(page.distributions))
    out.append(_table(["model", "tokens", "mean [95% CI]", "SD", "max |a|"],
                      [[MODEL_LABELS[d.model], d.n_tokens, f"{d.mean:.3g} [{d.mean_interval[0]:.3g}, "
                        f"{d.mean_interval[1]:.3g}]", _num(d.sd), _num(d.absmax)] for d in page.distributions]))
    out.append("</div><h2>Top-activating examples</h2>"
               f"<p>Shading: activation / {page.scale:.3g} (the largest |a| among these examples; red positive, "
               "blue negative), the same scale for base and tuned. Prompts are ranked by the cache's peak over "
               "content tokens (in the chat template); the tokens shown are rerun as raw text, a window around "
               "their peak.</p><div class='cols'>")
    for model in ("base", "merged"):
        mine = [e for e in page.examples if e.model == model]
        out.append(f"<div style='flex:1;min-width:300px'><h3>{MODEL_LABELS[model]}</h3>"
                   + ("".join(example_html(e, page.scale) for e in mine) or "<p class='muted'>none</p>") + "</div>")
    out.append("</div></body></html>")
    return "\n".join(out)


INDEX_SCRIPT = r"""
const rows = JSON.parse(document.getElementById('data').textContent);
const cols = JSON.parse(document.getElementById('cols').textContent);
let key = 'rank', dir = 1;
const $ = id => document.getElementById(id);
function fmt(v){ return v === null ? '' : (typeof v === 'number' && !Number.isInteger(v) ? v.toPrecision(3) : String(v)); }
function draw(){
  const q = $('search').value.trim().replace(/^L/i,'').replace(/N/i,''), layer = $('layer').value, cls = $('class').value,
        role = $('role').value, min = parseFloat($('min').value);
  const exact = /^\d+\.\d+$/.test(q);  // a whole L.N finds that neuron; a part of one, every neuron it starts
  const shown = rows.filter(r => (!q || (exact ? r.layer + '.' + r.index === q : (r.layer + '.' + r.index).startsWith(q))) && (!layer || String(r.layer) === layer)
    && (!cls || r.class === cls) && (!role || r.roles.includes(role)) && (isNaN(min) || Math.abs(r.strength ?? 0) >= min));
  shown.sort((a, b) => { const x = a[key], y = b[key]; return (x === y ? 0 : x === null ? 1 : y === null ? -1 : x < y ? -1 : 1) * dir; });
  $('count').textContent = shown.length + ' of ' + rows.length + ' neurons';
  $('body').innerHTML = shown.map(r => '<tr><td class="l"><a href="L' + r.layer + '_N' + r.index + '.html">L' + r.layer
    + '.N' + r.index + '</a></td>' + cols.slice(1).map(c => '<td' + (c === 'roles' || c === 'class' ? ' class="l">' : '>')
    + fmt(c === 'roles' ? r.roles.join(' ') : r[c]) + '</td>').join('') + '</tr>').join('');
}
document.querySelectorAll('th[data-key]').forEach(th => th.onclick = () => {
  dir = key === th.dataset.key ? -dir : 1; key = th.dataset.key; draw(); });
// Text boxes redraw as one types; selects on change (a text box's change, on blur, would redraw under a click).
['search','min'].forEach(id => $(id).oninput = draw);
['layer','class','role'].forEach(id => $(id).onchange = draw);
draw();
"""


def index_html(title: str, rows: list[dict[str, Any]], report: str | None = None) -> str:
    """The index: one row per neuron with a page; sort by clicking a header, filter by layer, class, role,
    minimum |specific strength|, search by ``L.N``."""
    columns = ["neuron", *[k for k in rows[0] if k not in ("layer", "index")]] if rows else ["neuron"]
    columns = ["neuron", "layer", "index", *[c for c in columns[1:]]]
    options = {name: sorted({str(v) for r in rows for v in (r[name] if name == "roles" else [r[name]])},
                            key=lambda s: (len(s), s) if name == "layer" else s)
               for name in ("layer", "class", "roles")}

    def select(ident: str, name: str) -> str:
        return (f"<select id='{ident}'><option value=''>any {ident}</option>"
                + "".join(f"<option>{html.escape(o)}</option>" for o in options[name]) + "</select>")

    head = "".join(f"<th class='l' data-key='{c if c != 'neuron' else 'rank'}'>{html.escape(c)}</th>" for c in columns)
    data = json.dumps(rows).replace("</", "<\\/")
    back = f"<nav><a href='{html.escape(report)}'>report</a></nav>" if report else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style>"
            f"</head><body>{back}<h1>{html.escape(title)}</h1><p>"
            "<input id='search' placeholder='search L.N' size='10'>" + select("layer", "layer") + select("class", "class")
            + select("role", "roles") + "<input id='min' type='number' step='any' placeholder='min |strength|' size='10'>"
            f"<span id='count'></span></p><table><thead><tr>{head}</tr></thead><tbody id='body'></tbody></table>"
            f"<script type='application/json' id='data'>{data}</script>"
            f"<script type='application/json' id='cols'>{json.dumps(columns)}</script>"
            f"<script>{INDEX_SCRIPT}</script></body></html>")
