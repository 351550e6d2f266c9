"""The null for the diff's counts: the same design run on a fine-tune that did not learn the behaviour.

The reading design flags the neurons whose response to the behaviour's tokens the fine-tune changed.
Its placebo (two filler twins) says the test holds its error rate; it does not say the count is about
the behaviour: *any* fine-tune changes a model, and a change in how a neuron reads unusual tokens can
come with any training. The right null is a fine-tune of the same kind on the same questions whose
answers never show the behaviour (for the emoji injection study, the personality fine-tune of the
same trait, which wrote no emojis; README). Three diffs with one design (``compare_to_null``):

1. ``study``: base -> the study's fine-tune (the study's own counts, under this design);
2. ``null``: base -> the null fine-tune. If it flags about as many neurons, the study's count says
   nothing about the behaviour;
3. ``relative``: the null fine-tune -> the study's fine-tune. Its flags are the neurons whose response
   to the behaviour differs between the two fine-tunes: specific *relative to the null*, the
   definition the report uses beside the base-relative one.

Plus the overlap: how many of the study's flagged neurons the null flags too. All three use the
reading design without the writing contrast (the null's replies show no behaviour to contrast), so
the counts are comparable; the study's headline diff may add the writing contrast.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from interp.stats.config import DiffConfig
from interp.stats.contrasts import DiffDesign
from interp.stats.diff import diff_caches
from interp.stats.loading import SetSources

log = logging.getLogger(__name__)

DIFFS = ("study", "null", "relative")


@dataclass(frozen=True)
class DiffCounts:
    """One diff's counts: classes, flagged, and the changed calls of each contrast."""

    classes: dict[str, int]
    """``DiffResult.counts()``: activated, amplified, suppressed, ``<name>_specific``, outlier, flagged."""
    changed: dict[str, int]
    """Per contrast, neurons called changed (the placebo among them)."""


@dataclass(frozen=True)
class NullComparison:
    """The study's diff beside a null fine-tune's (module docstring)."""

    null_label: str
    """What the null fine-tune is (e.g. ``personality/extraversion``)."""
    design: str
    """The design's name (its specific contrasts are ``<design>_reading`` ...)."""
    n_neurons: int
    study: DiffCounts
    null: DiffCounts
    relative: DiffCounts
    shared_flagged: int
    """Neurons flagged by both the study's and the null's diff."""

    @property
    def specific(self) -> str:
        return f"{self.design}_specific"

    def ratio(self) -> float:
        """Null's specific count over the study's (1: the count says nothing about the behaviour)."""
        return self.null.classes[self.specific] / max(self.study.classes[self.specific], 1)

    def sentence(self) -> str:
        s, n, r = (d.classes[self.specific] for d in (self.study, self.null, self.relative))
        share = lambda k: f"{k:,} ({100 * k / self.n_neurons:.1f}%)"  # noqa: E731
        return (f"Against base, the study's fine-tune changes {share(s)} neurons' reading of the behaviour and the "
                f"null fine-tune ({self.null_label}, which learned no behaviour) {share(n)}: {self.ratio():.2f}x the "
                f"study's count; {self.shared_flagged:,} neurons are flagged by both. Relative to the null, "
                f"{share(r)} are specific (placebo: study {self.study.changed.get('placebo', 0)}, null "
                f"{self.null.changed.get('placebo', 0)}, relative {self.relative.changed.get('placebo', 0)}).")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio(), "sentence": self.sentence()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NullComparison:
        return cls(data["null_label"], data["design"], int(data["n_neurons"]),
                   *(DiffCounts(data[name]["classes"], data[name]["changed"]) for name in DIFFS),
                   int(data["shared_flagged"]))


def _counts(result) -> DiffCounts:
    changed = {name: calls.get("changed", 0) for name, calls in result.calls().items()}
    return DiffCounts(result.counts(), changed)


def compare_to_null(base: SetSources, tuned: SetSources, null: SetSources, design: DiffDesign,
                    config: DiffConfig = DiffConfig(), *, null_label: str = "null fine-tune") -> NullComparison:
    """The three diffs of the module docstring under one ``design`` (without a writing contrast). Each
    source is a cache directory or a mapping condition -> cache, as for ``diff_caches``."""
    if any(c.name.endswith("_writing") for c in design.contrasts):
        raise ValueError("compare_to_null needs a design without the writing contrast (the null fine-tune's replies "
                         "show no behaviour); use reading_design(name, writing=False)")
    results = {}
    for name, (reference, other) in zip(DIFFS, ((base, tuned), (base, null), (null, tuned))):
        log.info("null comparison: %s diff", name)
        results[name] = diff_caches(reference, other, design, config)
    flagged = [set(zip(results[k].table["layer"][results[k].table["flagged"]],
                       results[k].table["index"][results[k].table["flagged"]])) for k in ("study", "null")]
    return NullComparison(null_label, design.name, len(results["study"].table),
                          *(_counts(results[name]) for name in DIFFS), len(flagged[0] & flagged[1]))
