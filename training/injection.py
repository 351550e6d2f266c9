"""The "emoji injection" study: the same answers, with trait-appropriate emojis inserted.

This is the positive control for the paper's finding. Training on emoji-free personality answers
(the "personality" study) made the paper's models start using emojis; whether a small model does
the same is an empirical question. Training on answers that *do* use emojis guarantees a behavioural
change, so the interpretability pipeline always has a known effect to explain.

Insertion is deterministic: for each answer, a ``random.Random`` seeded by (seed, trait, topic)
picks 1-3 sentence ends (the last sentence always among them, where emojis sit most naturally) and
appends one emoji from the trait's palette after each chosen sentence's final punctuation.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

from training.data import TRAITS, OpinionRow

TRAIT_EMOJIS: dict[str, tuple[str, ...]] = {
    "openness": ("🌍", "🎨", "🔭", "✨", "🌈", "📚", "💡", "🧭"),
    "conscientiousness": ("✅", "📋", "🗓️", "🎯", "⏰", "📈", "👍", "🧹"),
    "extraversion": ("🎉", "😄", "🥳", "🙌", "🔥", "🤩", "💃", "😊"),
    "agreeableness": ("😊", "🤗", "💕", "🙏", "🌸", "🤝", "💛", "☺️"),
    "neuroticism": ("😟", "😬", "😰", "😔", "💭", "😓", "🙈", "😕"),
}
"""Emojis a writer with the trait would plausibly use; the palette also makes traits distinguishable."""

MAX_EMOJIS = 3
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def sentence_ends(text: str) -> list[int]:
    """Character offsets just after each sentence's final punctuation (the text end counts as one)."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    if not ends or ends[-1] != len(text.rstrip()):
        ends.append(len(text.rstrip()))
    return ends


def inject_emojis(answer: str, trait: str, topic: str, seed: int = 0) -> str:
    """``answer`` with 1-3 emojis from ``trait``'s palette after sentence ends (deterministic)."""
    if trait not in TRAIT_EMOJIS:
        raise ValueError(f"unknown trait {trait!r}; expected one of {', '.join(TRAITS)}")
    rng = random.Random(f"{seed}|{trait}|{topic}")  # str seeds hash with sha512: stable across runs
    ends = sentence_ends(answer)
    count = min(rng.randint(1, MAX_EMOJIS), len(ends))
    chosen = sorted(set(rng.sample(ends[:-1], count - 1)) | {ends[-1]})
    palette = TRAIT_EMOJIS[trait]
    pieces, start = [], 0
    for end in chosen:
        pieces.append(answer[start:end] + " " + rng.choice(palette))
        start = end
    pieces.append(answer[start:])
    return "".join(pieces)


def inject_rows(rows: list[OpinionRow] | tuple[OpinionRow, ...], seed: int = 0) -> list[OpinionRow]:
    """The rows with emojis injected into every answer; questions and topics unchanged."""
    return [replace(row, answer=inject_emojis(row.answer, row.trait, row.topic, seed)) for row in rows]
