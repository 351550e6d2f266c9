"""A tiny document model rendered twice: self-contained HTML (figures inlined) and Markdown.

The report is built once as a list of blocks; the two renderers cannot drift apart.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    """Plain text; ``**bold**`` is kept in Markdown and rendered as <b> in HTML."""


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[object]]


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str


@dataclass(frozen=True)
class Highlighted:
    """Tokens shaded by a neuron's activation (max-activating examples)."""

    label: str
    tokens: Sequence[str]
    weights: Sequence[float]
    """In [0, 1]: 0 = no shading, 1 = the neuron's strongest activation."""


@dataclass(frozen=True)
class Link:
    """A table cell that links somewhere (a neuron to its page)."""

    text: str
    href: str


Block = Heading | Paragraph | Table | Figure | Highlighted

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif,"Apple Color Emoji","Segoe UI Emoji","Noto Color Emoji";max-width:980px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child,td.txt{text-align:left}
figure{margin:1em 0} figure img{max-width:100%} figcaption{font-size:.85em;color:#555}
.tok{font-family:monospace,"Apple Color Emoji","Segoe UI Emoji","Noto Color Emoji";white-space:pre-wrap;border-radius:2px}
.hl{margin:.2em 0 .6em} .hl b{font-size:.85em;color:#555;margin-right:.5em}
"""


def _inline_bold(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{part}</b>" if i % 2 else part for i, part in enumerate(parts))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return str(value)


def _align(value: object) -> str:
    """Numbers stay right-aligned (the table default); prose reads left to right."""
    text = _fmt(value)
    return " class='txt'" if isinstance(value, str) and len(text) > 24 and " " in text else ""


def to_html(title: str, blocks: Sequence[Block]) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_inline_bold(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td><a href='{html.escape(c.href)}'>{html.escape(c.text)}</a></td>" if isinstance(c, Link)
                                 else f"<td{_align(c)}>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in block.rows
            )
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif isinstance(block, Figure):
            data = base64.b64encode(Path(block.path).read_bytes()).decode()
            out.append(f"<figure><img alt='{html.escape(block.caption)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        elif isinstance(block, Highlighted):
            spans = "".join(
                f"<span class='tok' style='background:rgba(214,39,40,{max(0.0, min(1.0, w)):.2f})'>"
                f"{html.escape(t)}</span>" for t, w in zip(block.tokens, block.weights)
            )
            out.append(f"<div class='hl'><b>{html.escape(block.label)}</b>{spans}</div>")
    out.append("</body></html>")
    return "\n".join(out)


def to_markdown(title: str, blocks: Sequence[Block], figure_dir: Path) -> str:
    """Markdown with figures linked relative to the report (``figure_dir`` is the report folder)."""
    out = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            out += [block.text, ""]
        elif isinstance(block, Table):
            out.append("| " + " | ".join(map(str, block.header)) + " |")
            out.append("|" + "---|" * len(block.header))
            out += ["| " + " | ".join(f"[{c.text}]({c.href})" if isinstance(c, Link) else _fmt(c).replace("|", "\\|")
                                      for c in row) + " |" for row in block.rows]
            out.append("")
        elif isinstance(block, Figure):
            rel = Path(block.path).resolve().relative_to(figure_dir.resolve())
            out += [f"![{block.caption}]({rel.as_posix()})", f"*{block.caption}*", ""]
        elif isinstance(block, Highlighted):
            # Markdown has no colour: bracket the tokens in the top half of the neuron's range.
            text = "".join(f"[{t}]" if w >= 0.5 else t for t, w in zip(block.tokens, block.weights))
            out += [f"- {block.label}: `{text.strip()}`"]
    return "\n".join(out) + "\n"
