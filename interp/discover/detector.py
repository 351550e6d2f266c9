"""A behaviour from discovered tokens: target strings and a regex that finds them in a reply.

A token that decodes to whole characters gives its text (stripped) as a target and, escaped, as a
pattern, with word boundaries where it starts or ends in a letter or digit (``\\bI\\b``: the token
' I' must not fire on "It"). A byte-level token that ends inside a UTF-8 character (an emoji's first
bytes, ``ĠðŁĺ``) decodes to U+FFFD; its bytes still say which characters it can begin: the lead byte fixes
the character's length, and filling the missing continuation bytes with their smallest and largest values (0x80, 0xBF)
gives the range of code points, so the pattern is the token's whole characters then that range
(``😀`` to ``🙏`` for ``ĠðŁĺ``), and the target is the range's first character. A token that starts
inside a character (a continuation byte) cannot be written as text and is left out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class DerivedBehavior:
    """What ``Behavior.parse("discovered:DIR")`` reads back from ``discovery.json``."""

    targets: tuple[str, ...]
    """Target strings (their first tokens are the proxy's targets)."""
    pattern: str
    """A regex matching any of the discovered tokens in a reply; empty when none could be written."""
    tokens: tuple[str, ...]
    """The token pieces it came from."""
    tuned_rate: float | None = None
    base_rate: float | None = None
    """When chosen by ``separating_behavior``: the share of the tuned and the base model's replies to the
    same questions in which the detector fires."""

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def _byte_decoder() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def _utf8_length(lead: int) -> int:
    return 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 0


def token_pattern(tokenizer: PreTrainedTokenizerBase, token_id: int) -> tuple[str, str] | None:
    """``(target, pattern)`` for one token (module docstring), or None if it cannot be written as text."""
    text = tokenizer.decode([token_id])
    if "\ufffd" not in text:
        stripped = text.strip()
        if not stripped:
            return None
        # A word matches as a word: ' I' must not fire on "It", nor ' love' on "glove".
        edge_start = r"\b" if stripped[0].isalnum() else ""
        edge_end = r"\b" if stripped[-1].isalnum() else ""
        return stripped, edge_start + re.escape(stripped) + edge_end
    decoder = _byte_decoder()
    piece = str(tokenizer.convert_ids_to_tokens(token_id))
    if not all(char in decoder for char in piece):
        return None  # not a byte-level token: its U+FFFD cannot be traced to bytes
    raw = bytes(decoder[char] for char in piece)
    for cut in range(len(raw) - 1, max(len(raw) - 4, -1), -1):
        head, tail = raw[:cut], raw[cut:]
        length = _utf8_length(tail[0])
        if length > len(tail) and all(0x80 <= b <= 0xBF for b in tail[1:]):
            try:
                whole = head.decode("utf-8")
            except UnicodeDecodeError:
                return None  # it starts inside a character
            missing = length - len(tail)
            low = (tail + b"\x80" * missing).decode("utf-8", errors="replace")
            high = (tail + b"\xbf" * missing).decode("utf-8", errors="replace")
            if "\ufffd" in low + high:
                return None
            prefix = whole.strip()
            return (prefix + low).strip(), re.escape(prefix) + f"[{re.escape(low)}-{re.escape(high)}]"
    return None


def derive_behavior(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int]) -> DerivedBehavior:
    """Targets and a detector for the given tokens (those that stood out of their null)."""
    found: dict[str, str] = {}
    pieces = []
    for token in token_ids:
        written = token_pattern(tokenizer, int(token))
        if written is not None and written[0]:
            found.setdefault(written[1], written[0])
            pieces.append(str(tokenizer.convert_ids_to_tokens(int(token))))
    patterns = sorted(found, key=len, reverse=True)  # longest first: a regex alternation takes the first match
    return DerivedBehavior(tuple(dict.fromkeys(found.values())), "|".join(patterns), tuple(pieces))


def _rate(pattern: str, texts: Sequence[str]) -> float:
    detector = re.compile(pattern)
    return sum(bool(detector.search(t)) for t in texts) / max(len(texts), 1)


def separating_behavior(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int], tuned_texts: Sequence[str],
                        base_texts: Sequence[str]) -> DerivedBehavior:
    """The subset of ``token_ids`` whose detector best separates the tuned model's replies from the base's.

    A behaviour is something the tuned model writes and the base does not. Tokens that stand out of the
    reply shift can be the tuned model's voice (' I', '!'), which the base writes too: a detector over all
    of them fires on most base replies and leaves a reply-level rate no room to move. Greedy forward
    selection over the tokens (in the order given) adds the token that most raises tuned rate minus base
    rate, and stops when none raises it."""
    candidates = [t for t in token_ids if (w := token_pattern(tokenizer, int(t))) is not None and w[0]]
    chosen: list[int] = []
    best = 0.0
    while True:
        patterns = [(derive_behavior(tokenizer, [*chosen, t]).pattern, t) for t in candidates if t not in chosen]
        scored = [(_rate(pattern, tuned_texts) - _rate(pattern, base_texts), t) for pattern, t in patterns]
        if not scored:
            break
        gain, token = max(scored, key=lambda pair: pair[0])  # ties: the earlier (larger shift) token
        if gain <= best:
            break
        chosen.append(token)
        best = gain
    derived = derive_behavior(tokenizer, chosen)
    if not derived.pattern:
        return derived
    return DerivedBehavior(derived.targets, derived.pattern, derived.tokens, _rate(derived.pattern, tuned_texts),
                           _rate(derived.pattern, base_texts))
