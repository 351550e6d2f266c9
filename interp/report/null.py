"""The report's null-fine-tune blocks, from ``null/comparison.json`` (``interp.stats.null``)."""

from __future__ import annotations

from interp.report.blocks import Block, Paragraph, Table

ROWS = ("change", "{name}_reading", "{name}_context", "placebo")
CLASSES = ("activated", "amplified", "suppressed", "{name}_specific", "flagged")


def null_blocks(comparison: dict, n_neurons: int) -> list[Block]:
    """The three diffs side by side: counts of changed calls per contrast and of each class."""
    name = comparison["design"]
    columns = [("study", "study fine-tune vs base"), ("null", f"null ({comparison['null_label']}) vs base"),
               ("relative", "study vs null fine-tune")]

    def cell(diff: str, key: str, group: str) -> str:
        value = comparison[diff][group].get(key)
        return "-" if value is None else f"{value:,} ({100 * value / n_neurons:.1f}%)"

    rows = [[f"changed: {row.format(name=name)}", *(cell(d, row.format(name=name), "changed") for d, _ in columns)]
            for row in ROWS]
    rows += [[f"class: {row.format(name=name)}", *(cell(d, row.format(name=name), "classes") for d, _ in columns)]
             for row in CLASSES]
    return [Paragraph("**The null fine-tune.** The same design (reading contrasts only) run on a fine-tune of the "
                      "same kind that learned no behaviour, and between the two fine-tunes. Specific relative to "
                      "the null = the right-hand column: neurons whose reading of the behaviour differs between "
                      f"the study's fine-tune and the null. {comparison['sentence']}"),
            Table(["count", *(label for _, label in columns)], rows)]
