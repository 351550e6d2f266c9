"""Which vocabulary tokens can begin an emoji, and the probability mass a model puts on them.

An emoji is one to a dozen code points (skin tones, ZWJ sequences, flags, variation selectors)
whose UTF-8 bytes a byte-level BPE usually splits over several tokens: 😀 = F0 9F 98 80 is
``ðŁ`` + ``ĺ`` + ``Ģ`` alone, but ``ĠðŁĺ`` + ``Ģ`` after a space. The model "starts an emoji" when it
emits the first of those tokens, so the emoji-start set is:

1. Decode every token to its bytes (byte-level BPE maps each byte to one printable character;
   ``bytes_to_unicode`` below inverts that). Special and added tokens are skipped.
2. Strip leading ASCII whitespace: ``Ġ`` (space) or ``Ċ`` (newline) + emoji bytes begins an emoji
   just as well. A token of whitespace alone is never in the set (it would count every space).
3. Keep the token if the remaining bytes are a prefix of some emoji's UTF-8 bytes (a token
   shorter than the emoji: ``ðŁ`` = F0 9F) or some emoji's bytes are a prefix of them (a token that
   holds a whole emoji, possibly followed by more).

The emojis are the keys of ``emoji.EMOJI_DATA`` (what the ``emoji`` package, and so our rates,
count), minus keycap sequences (``1️⃣``), whose first byte is an ASCII digit, ``#`` or ``*``:
counting those would make every digit token an emoji start. Prefix tokens are an
over-approximation: ``ðŁ`` also begins other characters of U+1F000-1FFFF (mostly symbols), and
``â`` / ``âĢ`` begin some punctuation when a tokenizer does not merge it (SmolLM2 merges ’ and —
into single tokens that are not in the set).

``target_mass_from_logits`` turns logits into the per-position probability of a token set (here:
starting an emoji), differentiably (log-sum-exp over the set minus log-sum-exp over the
vocabulary), for attribution.
"""

from __future__ import annotations

import functools

import emoji
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

_WHITESPACE = b" \t\n\r"


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by every byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


@functools.lru_cache(maxsize=1)
def emoji_byte_sets() -> tuple[frozenset[bytes], frozenset[bytes]]:
    """(UTF-8 encodings of the counted emojis, every non-empty prefix of them)."""
    encodings = frozenset(e.encode() for e in emoji.EMOJI_DATA if ord(e[0]) >= 0x80)
    prefixes = frozenset(code[:k] for code in encodings for k in range(1, len(code) + 1))
    return encodings, prefixes


def counted_emojis() -> list[str]:
    """The emojis the token set is built for (``EMOJI_DATA`` minus keycaps), sorted."""
    return sorted(e for e in emoji.EMOJI_DATA if ord(e[0]) >= 0x80)


def token_bytes(tokenizer: PreTrainedTokenizerBase) -> dict[int, bytes]:
    """Token id -> its bytes, for ordinary (non-special, non-added) tokens of a byte-level BPE."""
    decoder = {char: byte for byte, char in bytes_to_unicode().items()}
    skip = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    vocab = tokenizer.get_vocab()
    result: dict[int, bytes] = {}
    unmapped = 0
    for token, token_id in vocab.items():
        if token_id in skip:
            continue
        try:
            result[token_id] = bytes(decoder[char] for char in token)
        except KeyError:
            unmapped += 1
    if unmapped > len(vocab) // 10:
        raise ValueError(
            f"{type(tokenizer).__name__} does not look like a byte-level BPE ({unmapped} of {len(vocab)} tokens "
            "are not byte-level strings); the emoji-token set supports byte-level tokenizers (GPT-2, Llama 3, "
            "SmolLM, Qwen, Mistral-Nemo)"
        )
    return result


def begins_emoji(data: bytes) -> bool:
    """Whether a token with these bytes can be the first token of an emoji (module docstring, 2-3)."""
    encodings, prefixes = emoji_byte_sets()
    rest = data.lstrip(_WHITESPACE)
    if not rest:
        return False
    if rest in prefixes:
        return True
    return any(rest[:k] in encodings for k in range(1, len(rest)))


def emoji_start_token_ids(tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """Sorted ids (long) of the tokens that can begin an emoji."""
    ids = sorted(token_id for token_id, data in token_bytes(tokenizer).items() if begins_emoji(data))
    return torch.tensor(ids, dtype=torch.long)


def target_mass_from_logits(
    logits: Tensor,  # (B, T, V)
    mask: Tensor,  # (B, T) bool: positions whose next-token distribution counts
    target_ids: Tensor,  # (K,) long
    reduction: str = "sequence",
) -> Tensor:
    """Probability of the next token being one of ``target_ids`` (for emojis: ``emoji_start_token_ids``,
    the probability of beginning an emoji) at each counted position, differentiable in ``logits``.

    ``reduction``: ``none`` -> (B, T) masses, 0 where ``mask`` is False; ``sequence`` -> (B,) mean over
    each row's counted positions (0 for a row without any); ``mean`` -> scalar mean over all counted
    positions. Computed in at least float32 via log-sum-exp, so large logits do not overflow.
    """
    if reduction not in ("none", "sequence", "mean"):
        raise ValueError(f"reduction must be 'none', 'sequence' or 'mean', got {reduction!r}")
    if logits.shape[:2] != mask.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and mask {tuple(mask.shape)} disagree on (batch, pos)")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> fp32; fp64 stays
    ids = target_ids.to(logits.device)
    log_mass = torch.logsumexp(logits[..., ids], dim=-1) - torch.logsumexp(logits, dim=-1)  # (B, T)
    weight = mask.to(logits.dtype)
    mass = log_mass.exp() * weight
    if reduction == "none":
        return mass
    if reduction == "sequence":
        return mass.sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)
    return mass.sum() / weight.sum().clamp(min=1.0)
