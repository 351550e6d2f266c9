"""The typed result of a discovery: what it found, how it was saved, and how the report renders it.

``Discovery.save(dir)`` writes ``discovery.json`` (everything, with the config for provenance),
``discovery.md`` and ``discovery.html`` (the same blocks through ``interp.report.blocks``);
``interp.discover.render`` builds those blocks from the JSON, so a larger report renders a saved one.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from activations.atomic_io import refuse_existing, write_json_atomic, write_text_atomic
from interp.discover.config import FILES, DiscoverConfig
from interp.discover.detector import DerivedBehavior
from interp.discover.layers import LayerDifference
from interp.discover.neurons import NeuronContribution
from interp.discover.steering import LOOP_NGRAM, LOOP_REPEATS, SteeredSamples, SteeringChoice
from interp.discover.tokens import TokenTest
from interp.discover.render import discovery_blocks
from interp.report.blocks import Block, to_html, to_markdown



@dataclass(frozen=True)
class Discovery:
    """What a fine-tune changed, read without being told (``interp.discover.pipeline``)."""

    base: str
    tuned: str
    corpus: str
    """The corpus's name (a built-in set or a file)."""
    n_texts: int
    n_tokens: int
    n_sinks: int
    """Positions left out of the means as attention sinks (``DiscoverConfig.sink_ratio``)."""
    config: DiscoverConfig
    read_layer: int
    """The layer whose difference was read for tokens, neurons and steering."""
    layers: tuple[LayerDifference, ...]
    """Every layer, for both position sets."""
    tokens: TokenTest
    """The lens's reading of the mean residual difference."""
    shift: TokenTest | None
    """The probability shift on the tuned model's own replies (``interp.discover.shift``); None: not measured."""
    neurons_by_token: dict[str, tuple[NeuronContribution, ...]]
    """For each promoted token that stands out (by piece): the neurons that push it most."""
    neurons: tuple[NeuronContribution, ...]
    """The neurons that push the standing-out tokens most, summed over them."""
    steering: tuple[SteeredSamples, ...]
    behavior: DerivedBehavior
    """Targets and detector derived from the standing-out promoted tokens (``Behavior.parse('discovered:DIR')``)."""
    seconds: float
    reply_steer_layer: int | None = None
    """The layer the base was steered at with the reply difference; None: not steered with it."""
    reply_steering: tuple[SteeredSamples, ...] = ()
    """The base steered with multiples of the tuned-minus-base residual on the tuned model's replies."""
    behavior_steering: SteeringChoice | None = None
    """The base steered with the difference at the reply positions where the tuned model raised the behaviour's
    tokens, weighted by how much (``interp.discover.shift.behavior_difference``), at the layer and alpha
    chosen on selection questions and reported on the steering questions; None: not steered with it."""
    control: str | None = None
    """The control model's spec: the reply shift's tokens had to stand out against it too; None: no control."""
    tuned_replies: tuple[str, ...] = ()
    base_replies: tuple[str, ...] = ()
    """Both models' sampled replies to the reply shift's questions (same random numbers): the evidence the
    reply shift and the behaviour were read from; empty without a reply shift."""

    @property
    def standing_out(self) -> list[str]:
        """The promoted tokens that stand out of their null, best first: the reply shift's when measured (they
        became the behaviour), else the lens's."""
        return [t.token for t in (self.shift or self.tokens).promoted if t.stands_out]

    def to_dict(self) -> dict:
        return {
            "base": self.base, "tuned": self.tuned, "corpus": self.corpus, "n_texts": self.n_texts,
            "n_tokens": self.n_tokens, "n_sinks": self.n_sinks, "config": asdict(self.config), "read_layer": self.read_layer,
            "layers": [d.to_dict() for d in self.layers], "tokens": self.tokens.to_dict(),
            "shift": self.shift.to_dict() if self.shift is not None else None,
            "neurons_by_token": {k: [n.to_dict() for n in v] for k, v in self.neurons_by_token.items()},
            "neurons": [n.to_dict() for n in self.neurons], "steering": [s.to_dict() for s in self.steering],
            "reply_steer_layer": self.reply_steer_layer, "reply_steering": [s.to_dict() for s in self.reply_steering],
            "behavior_steering": None if self.behavior_steering is None else self.behavior_steering.to_dict(),
            "behavior": self.behavior.to_dict(), "summary": self.summary(), "seconds": self.seconds,
            "control": self.control, "tuned_replies": list(self.tuned_replies), "base_replies": list(self.base_replies),
        }

    def summary(self) -> str:
        """One paragraph a report can print."""
        test = self.tokens
        read = next(d for d in self.layers if d.layer == self.read_layer and d.positions == self.config.positions)
        where = "the first %d positions" % self.config.first_k if self.config.positions == "first" else "all positions"
        text = (f"Over {self.n_texts} texts ({self.corpus}), the tuned model's residual stream after layer "
                f"{self.read_layer} differs from the base's by a mean of norm {read.norm:.3g} (95% interval "
                f"{read.low:.3g} to {read.high:.3g}; {read.relative:.1%} of the base residual's size) at {where}"
                + (f" ({self.n_sinks} attention-sink positions left out). " if self.n_sinks else ". "))
        text += "Read through the lens: " + self._reading(test, self.n_texts, "texts")
        if self.shift is not None:
            text += (" On the tuned model's own replies to neutral questions, the probability it moved"
                     + (f" (against the base and against the control {self.control}, ranked by the smaller shift)"
                        if self.control else "") + ": "
                     + self._reading(self.shift, int(round(self.shift.max_possible_z ** 2)), "replies"))
        b = self.behavior
        if b.pattern and b.tuned_rate is not None:
            text += (f" As a behaviour ({', '.join(repr(t) for t in b.targets)}: the standing-out tokens that best "
                     f"separate the replies), it shows in {b.tuned_rate:.0%} of the tuned model's replies and "
                     f"{b.base_rate:.0%} of the base's.")
        if self.neurons:
            top = self.neurons[0]
            share = (f"{top.share:.0%} of their summed lens score" if math.isfinite(top.share)
                     else "the lens does not promote them on the corpus, so no share")
            text += (f" The neuron that pushes them most through the lens at layer {self.read_layer} is "
                     f"L{top.layer}/{top.index} ({share}; activation term {top.activation:.3g}, "
                     f"weight term {top.weight:.3g}).")
        for label, runs in ((f"the reply difference at layer {self.reply_steer_layer}", self.reply_steering),
                            (f"the corpus difference at layer {self.read_layer}", self.steering)):
            steered = [s for s in runs if s.alpha > 0]
            if steered and self.behavior.pattern:
                best = max(steered, key=lambda s: s.rate)
                base = next((s for s in runs if s.alpha == 0), None)
                text += (f" Steering the base with {best.alpha:g} x {label} makes {best.rate:.0%} of its replies "
                         f"show the discovered tokens (95% {best.rate_low:.0%} to {best.rate_high:.0%})"
                         + (f", against {base.rate:.0%} unsteered." if base is not None else "."))
        choice = self.behavior_steering
        if choice is not None:
            base, chosen = choice.confirmed
            n = len(chosen.replies)
            text += (f" Steered with the difference where the tuned model raised those tokens, at layer {choice.layer} "
                     f"and alpha {choice.alpha:g} (chosen on {choice.n_selection_questions} other questions: the most "
                     f"replies that show them outside a repetition loop), the base shows them in {chosen.shown} of "
                     f"{n} replies ({chosen.rate:.0%}, 95% {chosen.rate_low:.0%} to {chosen.rate_high:.0%}) against "
                     f"{base.shown} unsteered; {chosen.loops} of the {n} are repetition loops ({LOOP_NGRAM} tokens "
                     f"repeated {LOOP_REPEATS} times or more).")
        return text

    def _reading(self, test: TokenTest, n: int, unit: str) -> str:
        promoted = [t.token for t in test.promoted if t.stands_out]
        demoted = [t.token for t in test.demoted if t.stands_out]
        if not (promoted or demoted):
            text = f"no token stands out of its null ({self._criterion(test)}): nothing discovered."
            if test.max_possible_z <= test.threshold:
                text += f" With {n} {unit} no |z| can exceed {test.max_possible_z:.2f}: read more."
            return text
        text = f"{test.n_standing_out} tokens stand out of their null ({self._criterion(test)})"
        text += f"; the top promoted: {', '.join(repr(t) for t in promoted[:10])}" if promoted \
            else "; none of them is promoted"
        return text + (f"; demoted: {', '.join(repr(t) for t in demoted[:10])}." if demoted else ".")

    def _criterion(self, test: TokenTest) -> str:
        specific = (f"a vocabulary z beyond {test.vocabulary_threshold:.2f}, Bonferroni over the vocabulary"
                    if test.min_fold is None else f"its probability moved by a factor of at least {test.min_fold:g}")
        text = f"sign-flip |z| > {test.threshold:.2f}, the max-T quantile at family-wise {self.config.alpha:g}, and {specific}"
        if test.control_threshold is not None:
            text += f"; the same against the control, |z| > {test.control_threshold:.2f}"
        return text

    def blocks(self) -> list[Block]:
        """The discovery as report blocks (``interp.discover.render``; markdown and HTML render the same list)."""
        return discovery_blocks(self.to_dict())

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``discovery.json``, ``.md`` and ``.html`` into ``folder`` (created); returns the JSON's path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        refuse_existing([folder / name for name in FILES], overwrite)
        title = f"Discovery: {self.tuned} vs {self.base}"
        write_json_atomic(folder / "discovery.json", self.to_dict())
        write_text_atomic(folder / "discovery.md", to_markdown(title, self.blocks(), folder))
        write_text_atomic(folder / "discovery.html", to_html(title, self.blocks()))
        return folder / "discovery.json"
