"""A behaviour's use in replies, and bootstrap confidence intervals over questions.

Occurrences are what the behaviour finds (``activations.behaviors``; for emojis the ``emoji``
package: a ZWJ family or a flag counts once). Sentences end at ``.``, ``!``, ``?``, ``…`` followed
by whitespace, or at a line break; an occurrence that follows a sentence's final punctuation
(``Great party! 🎉 See you``, ``Great party! [grins] See you``) belongs to that sentence, which is
where a writer puts it. The sentence ratio (for emojis the paper's Emoji-to-Sentence Ratio, ESR) is
the share of sentences with at least one occurrence.

Intervals resample *questions* (a cluster bootstrap): the samples of one question are not
independent, so resampling responses would give intervals that are too narrow. Every statistic is
a ratio of per-question sums (responses that show it / responses, sentences that show it /
sentences, ...), recomputed on each resample; the interval is the percentile interval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from activations.behaviors import Behavior

_BOUNDARY = re.compile(r"(?<=[.!?…])\s+|\s*\n+\s*")


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval and how the interval was made (the project's one
    interval type: behaviour metrics here, rates and cuts in ``interp.causal.uncertainty``)."""

    value: float
    low: float
    high: float
    method: str = "cluster bootstrap over questions (percentile)"
    n: int = 0
    """Clusters (questions) it rests on."""

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "method": self.method, "n": self.n}

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high


def _leading_end(piece: str, behavior: Behavior) -> int:
    """End offset of the run of occurrences (and spaces between them) that opens ``piece``; 0 if none."""
    end = 0
    for start, stop in behavior.spans(piece):
        if piece[end:start].strip():
            break
        end = stop
    return end


def split_sentences(text: str, behavior: Behavior) -> list[str]:
    """Sentences of ``text``, with occurrences that open a piece attached to the sentence they follow."""
    sentences: list[str] = []
    for piece in _BOUNDARY.split(text.strip()):
        if not piece:
            continue
        lead = _leading_end(piece, behavior)
        if lead and sentences:
            sentences[-1] = f"{sentences[-1]} {piece[:lead].strip()}"
            piece = piece[lead:].strip()
        if piece:
            sentences.append(piece)
    return sentences


@dataclass(frozen=True)
class TextStats:
    """A behaviour's counts in one response."""

    n_occurrences: int
    n_sentences: int
    n_sentences_showing: int
    occurrences: tuple[str, ...]


def text_stats(text: str, behavior: Behavior) -> TextStats:
    sentences = split_sentences(text, behavior)
    showing = sum(1 for sentence in sentences if behavior.shows(sentence))
    found = behavior.occurrences(text)
    return TextStats(len(found), len(sentences), showing, found)


def bootstrap_ratio(
    numerators: np.ndarray,  # (Q,) per-question sums
    denominators: np.ndarray,  # (Q,) per-question sums
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """sum(num) / sum(den) with a percentile interval from resampling questions (seeded)."""
    numerators, denominators = np.asarray(numerators, float), np.asarray(denominators, float)
    if numerators.shape != denominators.shape or numerators.ndim != 1 or numerators.size == 0:
        raise ValueError("numerators and denominators must be equal-length, non-empty 1-d arrays")
    total = denominators.sum()
    value = float(numerators.sum() / total) if total > 0 else float("nan")
    if numerators.size == 1 or total == 0:
        return Interval(value, value, value, n=int(numerators.size))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, numerators.size, size=(n_resamples, numerators.size))
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = numerators[picks].sum(axis=1) / denominators[picks].sum(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.nanpercentile(stats, [tail, 100 - tail])
    return Interval(value, float(low), float(high), n=int(numerators.size))
