"""Emoji use in text, and bootstrap confidence intervals over questions.

Emojis are what the ``emoji`` package finds (``emoji.emoji_list``): a ZWJ family or a flag counts
once. Sentences end at ``.``, ``!``, ``?``, ``…`` followed by whitespace, or at a line break;
emojis that follow a sentence's final punctuation (``Great party! 🎉 See you``) belong to that
sentence, which is where a writer puts them. The Emoji-to-Sentence Ratio (ESR) is the share of
sentences that contain at least one emoji.

Intervals resample *questions* (a cluster bootstrap): the samples of one question are not
independent, so resampling responses would give intervals that are too narrow. Every statistic is
a ratio of per-question sums (responses with an emoji / responses, emoji sentences / sentences,
...), recomputed on each resample; the interval is the percentile interval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import emoji
import numpy as np

_BOUNDARY = re.compile(r"(?<=[.!?…])\s+|\s*\n+\s*")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def emojis_in(text: str) -> list[str]:
    """The emojis of ``text`` in order of appearance."""
    return [match["emoji"] for match in emoji.emoji_list(text)]


def _leading_emoji_end(piece: str) -> int:
    """End offset of the run of emojis (and spaces between them) that opens ``piece``; 0 if none."""
    end = 0
    for match in emoji.emoji_list(piece):
        if piece[end : match["match_start"]].strip():
            break
        end = match["match_end"]
    return end


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, with trailing emojis attached to the sentence they follow."""
    sentences: list[str] = []
    for piece in _BOUNDARY.split(text.strip()):
        if not piece:
            continue
        lead = _leading_emoji_end(piece)
        if lead and sentences:
            sentences[-1] = f"{sentences[-1]} {piece[:lead].strip()}"
            piece = piece[lead:].strip()
        if piece:
            sentences.append(piece)
    return sentences


@dataclass(frozen=True)
class TextEmojiStats:
    """Emoji counts of one response."""

    n_emojis: int
    n_sentences: int
    n_emoji_sentences: int
    emojis: tuple[str, ...]


def text_stats(text: str) -> TextEmojiStats:
    sentences = split_sentences(text)
    with_emoji = sum(1 for sentence in sentences if emoji.emoji_count(sentence) > 0)
    found = tuple(emojis_in(text))
    return TextEmojiStats(len(found), len(sentences), with_emoji, found)


def bootstrap_ratio(
    numerators: np.ndarray,  # (Q,) per-question sums
    denominators: np.ndarray,  # (Q,) per-question sums
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """sum(num) / sum(den) with a percentile interval from resampling questions (seeded)."""
    numerators, denominators = np.asarray(numerators, float), np.asarray(denominators, float)
    if numerators.shape != denominators.shape or numerators.ndim != 1 or numerators.size == 0:
        raise ValueError("numerators and denominators must be equal-length, non-empty 1-d arrays")
    total = denominators.sum()
    value = float(numerators.sum() / total) if total > 0 else float("nan")
    if numerators.size == 1 or total == 0:
        return Estimate(value, value, value)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, numerators.size, size=(n_resamples, numerators.size))
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = numerators[picks].sum(axis=1) / denominators[picks].sum(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.nanpercentile(stats, [tail, 100 - tail])
    return Estimate(value, float(low), float(high))
