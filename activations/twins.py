"""Length-matched twins: each marked span (an emoji) replaced by ordinary words of the same token count.

Removing the emojis to make an "emoji-free twin" shortens the text, and every token after the emoji
moves to another position; any neuron that depends on length or position then differs between a
text and its twin for reasons that have nothing to do with emojis. A twin built here instead has
exactly the same number of tokens as its original, the same token ids at every unmarked position,
and its marked positions where the original's are; only the marked tokens differ (emoji tokens vs
ordinary words). Two twins drawn with different seeds form the placebo: the same contrast, with no
emojis on either side.

1. Encode the original (``activations.roles``) and count the tokens of each marked span.
2. Replace each span by that many words drawn (seeded by seed, prompt id and attempt) from a pool
   of ordinary nouns that this tokenizer encodes as one token each after a space.
3. Encode the twin and accept it only if it has the same length, the same ids outside the marks and
   its marks at the same positions; otherwise draw again (a word at the very start of a text, or one
   that merges with a neighbour, can take more tokens). A prompt with no marks, or for which no draw
   fits within ``attempts`` for every seed, is dropped from the pairs and reported.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from activations.prompt_sets import PromptSet, Spans
from activations.roles import EncodedPrompt, TokenRole, encode_prompt

log = logging.getLogger(__name__)

FILLER_WORDS: tuple[str, ...] = tuple(sorted(set("""
table river garden window paper chair stone bottle pencil basket bridge candle carpet cloud coat corner cotton
desk door drawer engine fence field floor forest glass hill island jacket kettle ladder lamp leaf letter market
metal mirror mountain needle ocean oven pocket railway rope salt sand shelf shirt shoe silver soap spoon square
station street string sugar tent thread ticket tower train tree valley village wall wheel wire wood yard bread
button cabinet camera canal card castle cup dish envelope feather folder frame gate harbor helmet hook jar key
knot lake lane lid map mat meadow nail notebook pan path pebble pillow pipe plate pond post roof ruler saddle
scarf shell sheet shore sink sock stamp stove towel tray tunnel umbrella vase wagon whistle brick barrel bench
blanket board bucket cable clock cork crate curtain
""".split())))
"""Ordinary, emotionally flat nouns; the pool is filtered per tokenizer to one-token words."""


def one_token_words(tokenizer: PreTrainedTokenizerBase, pool: Sequence[str] = FILLER_WORDS) -> tuple[str, ...]:
    """The words of ``pool`` this tokenizer encodes as a single token after a space."""
    words = tuple(w for w in pool if len(tokenizer(" " + w, add_special_tokens=False).input_ids) == 1)
    if len(words) < 20:
        raise ValueError(f"only {len(words)} filler words are single tokens for this tokenizer; pass a larger pool "
                         "(pool=...) of ordinary words")
    return words


@dataclass(frozen=True)
class FillerTwins:
    """Originals and their length-matched twins, pair by pair (same ids, same order)."""

    original: PromptSet
    """The kept originals, marked at their emoji (or given) spans."""
    twins: tuple[PromptSet, ...]
    """One twin set per seed, marked at the filler words."""
    dropped: tuple[str, ...]
    """Ids of originals without marks or without a length-matched twin for some seed."""


def _replace(text: str, spans: Spans, counts: list[int], words: Sequence[str], rng: random.Random) -> tuple[str, Spans]:
    """``text`` with span k replaced by ``counts[k]`` drawn words; the new spans."""
    drawn = rng.sample(list(words), sum(counts)) if sum(counts) <= len(words) else rng.choices(list(words), k=sum(counts))
    pieces, new_spans, cursor, used = [], [], 0, 0
    for (start, end), count in zip(spans, counts):
        pieces.append(text[cursor:start])
        filler = " ".join(drawn[used : used + count])
        used += count
        position = sum(len(piece) for piece in pieces)
        new_spans.append((position, position + len(filler)))
        pieces.append(filler)
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces), tuple(new_spans)


def _matches(original: EncodedPrompt, twin: EncodedPrompt) -> bool:
    if len(original) != len(twin) or original.roles != twin.roles:
        return False
    marked = int(TokenRole.MARKED)
    return all(a == b for a, b, role in zip(original.ids, twin.ids, original.roles) if role != marked)


def filler_twins(
    prompts: PromptSet,
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    *,
    seeds: Sequence[int] = (0,),
    names: Sequence[str] | None = None,
    pool: Sequence[str] = FILLER_WORDS,
    attempts: int = 20,
) -> FillerTwins:
    """Length-matched twins of ``prompts`` for each seed (module docstring); ``names`` name the twin sets."""
    if not seeds:
        raise ValueError("filler_twins needs at least one seed")
    names = list(names) if names is not None else [f"{prompts.name}-filler-{seed}" for seed in seeds]
    if len(names) != len(seeds):
        raise ValueError(f"{len(names)} names for {len(seeds)} seeds")
    words = one_token_words(tokenizer, pool)
    kept: list[int] = []
    twin_texts: list[list[str]] = [[] for _ in seeds]
    twin_marks: list[list[Spans]] = [[] for _ in seeds]
    dropped: list[str] = []
    for index, (prompt_id, text) in enumerate(zip(prompts.ids, prompts.texts)):
        spans = prompts.marks_of(index)
        if not spans:
            dropped.append(prompt_id)
            continue
        encoded = encode_prompt(tokenizer, text, template, spans, (), prompts.context_of(index))
        counts = [encoded.tokens_in(span) for span in spans]
        found = []
        for seed in seeds:
            for attempt in range(attempts):
                rng = random.Random(f"{seed}|{prompt_id}|{attempt}")  # str seeds: stable across runs
                new_text, new_spans = _replace(text, spans, counts, words, rng)
                twin = encode_prompt(tokenizer, new_text, template, new_spans, (), prompts.context_of(index))
                if _matches(encoded, twin):
                    found.append((new_text, new_spans))
                    break
            else:
                break
        if len(found) != len(seeds):
            dropped.append(prompt_id)
            continue
        kept.append(index)
        for k, (new_text, new_spans) in enumerate(found):
            twin_texts[k].append(new_text)
            twin_marks[k].append(new_spans)
    if not kept:
        raise ValueError(f"no prompt of {prompts.name!r} got a length-matched twin (prompts without marks: "
                         f"{sum(not prompts.marks_of(i) for i in range(len(prompts)))}); mark the spans to replace")
    if dropped:
        log.info("%d of %d prompts of %s have no length-matched twin and are left out: %s", len(dropped), len(prompts),
                 prompts.name, ", ".join(dropped[:8]) + (" ..." if len(dropped) > 8 else ""))
    original = prompts.subset(kept)
    original = PromptSet(original.name, original.ids, original.texts, original.categories,
                         tuple(prompts.marks_of(i) for i in kept), original.controls, original.contexts)
    twins = tuple(
        PromptSet(name, original.ids, tuple(texts), original.categories, tuple(marks), None, original.contexts)
        for name, texts, marks in zip(names, twin_texts, twin_marks)
    )
    return FillerTwins(original, twins, tuple(dropped))
