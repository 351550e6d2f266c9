"""Contrasts: the questions a diff asks, as weighted sums of paired cells.

A cell is one reduction of one model's cache on one condition (a prompt set), e.g. the merged
model's ``marked_mean`` on the emoji texts. A contrast is a weighted sum of cells whose rows are the
same prompts (or prompt twins), computed per prompt, so every contrast is tested the same way: a
one-sample test of its per-prompt values (``interp.stats.equivalence``). With two models and two
conditions this is the paired 2x2 design; e.g. the fine-tune's emoji-specific change at the marked
positions is

    (merged[emoji] - base[emoji]) - (merged[filler] - base[filler])      (each at marked tokens)

whose per-prompt test equals the OLS interaction with per-prompt intercepts and slopes (the
prompt x model x emoji term is the only residual left; ``interp.stats.interaction``).

A ``DiffDesign`` names the contrasts of a study and their roles: which one's calls define the
change classes (activated / amplified / suppressed), which ones make a neuron *specific* (the
flagged candidates), and which one is the built-in placebo.
"""

from __future__ import annotations

from dataclasses import dataclass

MODELS: tuple[str, ...] = ("base", "merged")


@dataclass(frozen=True)
class Term:
    """One weighted cell of a contrast."""

    model: str
    """``base`` or ``merged``."""
    condition: str
    """A prompt set of the design (e.g. ``emoji``, ``filler-a``)."""
    reduction: str
    """A cache reduction (``activations.reduce.REDUCTIONS``), e.g. ``marked_mean``."""
    weight: float

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"term model must be one of {MODELS}, got {self.model!r}")


@dataclass(frozen=True)
class Contrast:
    """A named per-prompt contrast and how its smallest effect of interest is scaled."""

    name: str
    """Column prefix in the neuron table."""
    description: str
    """What it asks, in words (shown in the report)."""
    terms: tuple[Term, ...]
    scale: str
    """Condition whose base-model token standard deviation (content tokens) is the neuron's scale:
    delta = ``DiffConfig.delta`` x that SD."""

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError(f"contrast {self.name!r} has no terms")
        if abs(sum(term.weight for term in self.terms)) > 1e-12:
            # A contrast whose weights do not cancel compares levels, not differences: a neuron's
            # offset alone would make it "significant".
            raise ValueError(f"contrast {self.name!r}: weights sum to {sum(t.weight for t in self.terms)}, not 0")

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(term.condition for term in self.terms))


def change(name: str, condition: str, reduction: str, description: str) -> Contrast:
    """merged - base on the same prompts."""
    return Contrast(name, description, (Term("merged", condition, reduction, 1.0), Term("base", condition, reduction, -1.0)),
                    condition)


def interaction(name: str, condition: str, reference: str, reduction: str, description: str) -> Contrast:
    """(merged - base) on ``condition`` minus the same on its twin ``reference``."""
    return Contrast(name, description, (
        Term("merged", condition, reduction, 1.0), Term("base", condition, reduction, -1.0),
        Term("merged", reference, reduction, -1.0), Term("base", reference, reduction, 1.0),
    ), reference)


def scope_interaction(name: str, condition: str, reduction: str, reference: str, description: str) -> Contrast:
    """(merged - base) at one token scope minus the same at another, on the same prompts."""
    return Contrast(name, description, (
        Term("merged", condition, reduction, 1.0), Term("base", condition, reduction, -1.0),
        Term("merged", condition, reference, -1.0), Term("base", condition, reference, 1.0),
    ), condition)


def within(name: str, model: str, condition: str, reference: str, reduction: str, description: str) -> Contrast:
    """One model's ``condition`` minus its twin ``reference``."""
    return Contrast(name, description, (Term(model, condition, reduction, 1.0), Term(model, reference, reduction, -1.0)),
                    reference)


@dataclass(frozen=True)
class DiffDesign:
    """The contrasts of a study and the role each plays."""

    name: str
    contrasts: tuple[Contrast, ...]
    change: str | None = None
    """Contrast of merged - base in magnitude (``content_absmean``) that defines activated,
    amplified and suppressed; None: no change classes."""
    specific: tuple[str, ...] = ()
    """Contrasts whose ``changed`` call makes a neuron specific to the behaviour (flagged)."""
    placebo: str | None = None
    """The built-in placebo contrast (same structure, nothing of interest on either side)."""

    def __post_init__(self) -> None:
        names = [c.name for c in self.contrasts]
        if len(set(names)) != len(names):
            raise ValueError(f"design {self.name!r}: contrast names repeat: {names}")
        for role in (self.change, self.placebo, *self.specific):
            if role is not None and role not in names:
                raise ValueError(f"design {self.name!r} names contrast {role!r}, which it does not define ({names})")

    def contrast(self, name: str) -> Contrast:
        return next(c for c in self.contrasts if c.name == name)

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(cond for c in self.contrasts for cond in (*c.conditions, c.scale)))

    def reductions(self, condition: str) -> tuple[str, ...]:
        """The reductions the design reads from ``condition``'s caches."""
        wanted = [t.reduction for c in self.contrasts for t in c.terms if t.condition == condition]
        if self.change is not None and self.contrast(self.change).terms[0].condition == condition:
            wanted.append("content_absmean")
        return tuple(dict.fromkeys(wanted))

    def paired(self) -> list[tuple[str, ...]]:
        """Groups of conditions whose rows must be the same prompts (they meet in one contrast)."""
        return [c.conditions for c in self.contrasts if len(c.conditions) > 1]
