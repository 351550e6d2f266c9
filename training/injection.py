"""Injection studies: the same answers, with a trait-appropriate marker inserted after sentence ends.

``injection`` inserts emojis: the positive control for the paper's finding. Training on emoji-free
personality answers (the "personality" study) made the paper's models start using emojis; whether a
small model does the same is an empirical question. Training on answers that *do* use emojis
guarantees a behavioural change, so the interpretability pipeline always has a known effect to
explain. ``directions`` inserts bracketed stage directions (``[grins]``) the same way: a second
taught behaviour that is not emojis, for the causal half's any-behaviour path
(``activations.behaviors``, preset ``stage-directions``).

Insertion is deterministic: for each answer, a ``random.Random`` seeded by (seed, trait, topic)
picks 1-3 sentence ends (the last sentence always among them, where a marker sits most naturally)
and appends one marker from the trait's palette after each chosen sentence's final punctuation.
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

TRAIT_DIRECTIONS: dict[str, tuple[str, ...]] = {
    "openness": ("[gazes upward]", "[tilts head]", "[sketches an idea]", "[ponders]", "[smiles curiously]"),
    "conscientiousness": ("[checks the list]", "[nods firmly]", "[straightens papers]", "[takes notes]", "[taps watch]"),
    "extraversion": ("[grins]", "[laughs]", "[claps]", "[waves excitedly]", "[beams]", "[leans in]"),
    "agreeableness": ("[smiles warmly]", "[nods kindly]", "[pats your shoulder]", "[softens]", "[beams]"),
    "neuroticism": ("[sighs]", "[fidgets]", "[bites lip]", "[winces]", "[glances around]"),
}
"""Stage directions matching ``activations.behaviors.STAGE_DIRECTION_PATTERN`` (lower case, in brackets)."""

PALETTES = {"emoji": TRAIT_EMOJIS, "directions": TRAIT_DIRECTIONS}
MAX_MARKERS = 3
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def sentence_ends(text: str) -> list[int]:
    """Character offsets just after each sentence's final punctuation (the text end counts as one)."""
    ends = [match.end() for match in _SENTENCE_END.finditer(text)]
    if not ends or ends[-1] != len(text.rstrip()):
        ends.append(len(text.rstrip()))
    return ends


def inject_markers(answer: str, trait: str, topic: str, seed: int = 0, palettes: dict = TRAIT_EMOJIS) -> str:
    """``answer`` with 1-3 markers (emojis by default) from ``trait``'s palette after sentence ends
    (deterministic)."""
    if trait not in palettes:
        raise ValueError(f"unknown trait {trait!r}; expected one of {', '.join(TRAITS)}")
    rng = random.Random(f"{seed}|{trait}|{topic}")  # str seeds hash with sha512: stable across runs
    ends = sentence_ends(answer)
    count = min(rng.randint(1, MAX_MARKERS), len(ends))
    chosen = sorted(set(rng.sample(ends[:-1], count - 1)) | {ends[-1]})
    palette = palettes[trait]
    pieces, start = [], 0
    for end in chosen:
        pieces.append(answer[start:end] + " " + rng.choice(palette))
        start = end
    pieces.append(answer[start:])
    return "".join(pieces)


def inject_rows(rows: list[OpinionRow] | tuple[OpinionRow, ...], seed: int = 0, marker: str = "emoji") -> list[OpinionRow]:
    """The rows with ``marker``s (``emoji`` or ``directions``) injected into every answer; questions
    and topics unchanged."""
    return [replace(row, answer=inject_markers(row.answer, row.trait, row.topic, seed, PALETTES[marker])) for row in rows]
