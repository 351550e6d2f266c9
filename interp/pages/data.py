"""What a neuron's page shows, as typed values: ``NeuronPage`` and its parts.

Every part is plain data (numbers, strings, lists), so a page can be rendered to HTML, turned into
JSON, or inspected in a notebook without the models; ``NeuronPage.show()`` renders it in IPython.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

Z95 = 1.959964
"""The normal quantile of a two-sided 95% interval."""


@dataclass(frozen=True)
class ContrastStat:
    """One contrast's test of the neuron (a row of ``neurons.csv``)."""

    name: str
    estimate: float
    """The per-prompt mean difference, in activation units."""
    standardised: float
    """The estimate over the neuron's token SD (the diff's effect size)."""
    d_z: float
    """The estimate over the SD of the per-prompt differences (Cohen's d_z)."""
    se: float
    q: float
    """The minimum-effect test's q-value across all neurons."""
    q_equiv: float
    """The TOST equivalence test's q-value."""
    call: str
    """``changed``, ``equivalent`` or ``inconclusive``."""

    @property
    def interval(self) -> tuple[float, float]:
        """The estimate's 95% normal interval."""
        return self.estimate - Z95 * self.se, self.estimate + Z95 * self.se


@dataclass(frozen=True)
class CausalNumbers:
    """What the study's causal stage measured for this neuron; None where it was not measured."""

    patch_estimate: float | None = None
    """The screen's attribution estimate of mean-ablating it (change of the behaviour metric)."""
    mean_estimate: float | None = None
    exact_effect: float | None = None
    """A real ablation's change of the metric (shortlisted, checked or random neurons only)."""
    kl_neutral: float | None = None
    selectivity: float | None = None
    load_bearing: bool | None = None
    screen_rank: int | None = None
    """Its rank by |patch estimate| in the screen's ranking head (1 = first)."""
    in_choice: bool = False
    """Whether it is in the sweep's chosen suppressor set."""
    choice_rank: int | None = None
    leave_one_out: float | None = None
    """Share of the fine-tune's change the chosen set removes without this neuron (noising,
    ``interp.causal.where``); None: not measured."""
    set_share: float | None = None
    """Share the whole chosen set removes, on the same contexts (beside ``leave_one_out``)."""


@dataclass(frozen=True)
class TokenEffect:
    token: str
    value: float


@dataclass(frozen=True)
class LogitEffects:
    """The direct effect of the neuron's output weights on the logits (output column through the final
    norm's gain and the unembedding), per model, and the change the fine-tune made."""

    promoted_base: list[TokenEffect]
    demoted_base: list[TokenEffect]
    promoted_tuned: list[TokenEffect]
    demoted_tuned: list[TokenEffect]
    raised_by_tuning: list[TokenEffect]
    """Tokens whose effect grew most (tuned minus base)."""
    lowered_by_tuning: list[TokenEffect]
    weight_change: float
    """||w_tuned - w_base|| / ||w_base|| of the output column."""


@dataclass(frozen=True)
class Distribution:
    """The neuron's activation over one model's content tokens of the reading cache."""

    model: str
    n_tokens: int
    mean: float
    sd: float
    absmax: float
    hist: list[int] | None
    """Counts of |a| on ``activations.running.ABS_HIST_EDGES`` (None: the cache kept no histogram)."""

    @property
    def mean_interval(self) -> tuple[float, float]:
        half = Z95 * self.sd / max(self.n_tokens, 1) ** 0.5
        return self.mean - half, self.mean + half


@dataclass(frozen=True)
class Example:
    """One prompt that drives the neuron hard, with its per-token activations."""

    model: str
    prompt: int
    """The prompt's row in the cache."""
    tokens: list[str]
    """The token pieces of a window around the peak token (``activity.WINDOW``)."""
    values: list[float]
    """Raw activations, one per token piece."""
    peak: float
    """The cache's ``content_max`` of this prompt."""


@dataclass(frozen=True)
class NeuronPage:
    """Everything one neuron's page shows."""

    layer: int
    index: int
    roles: list[str]
    """Why it is on the index: ``flagged``, ``screen``, ``chosen``, ``outlier``, ``class:<name>``."""
    rank: int | None
    neuron_class: str
    stats: list[ContrastStat]
    causal: CausalNumbers
    logits: LogitEffects | None
    distributions: list[Distribution]
    examples: list[Example]
    scale: float
    """The shading scale of every example (the largest |a| over both models' examples)."""
    previous: tuple[int, int] | None = None
    next: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        return f"L{self.layer}.N{self.index}"

    @property
    def filename(self) -> str:
        return page_filename(self.layer, self.index)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_html(self) -> str:
        from interp.pages.render import neuron_html

        return neuron_html(self)

    def show(self) -> Any:
        """Display the page in a notebook (IPython); returns the HTML object, or the HTML text without IPython."""
        try:
            from IPython.display import HTML, display
        except ImportError:
            return self.to_html()
        page = HTML(self.to_html())
        display(page)
        return page


def page_filename(layer: int, index: int) -> str:
    return f"L{layer}_N{index}.html"
