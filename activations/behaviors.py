"""What a fine-tune taught, as a value: a ``Behavior`` says where a text shows it and which tokens start it.

Every causal stage asks the same four things of a behaviour, whatever it is (emojis, a catchphrase,
bracketed stage directions, a refusal opener):

1. ``spans(text)``: where a reply shows it (character ranges), from a regex or any callable; the
   sampled rate is the share of replies with at least one span.
2. ``target_token_ids(tokenizer, replies)``: the tokens whose probability the proxy scores at a
   decision point. Given as strings (each string's first token, with and without a leading space),
   or derived from the tuned model's own replies: the token that begins each detected span there.
   The emoji preset keeps its vocabulary-wide set (every token that can begin an emoji).
3. ``decision_spans(text)``: the decision contexts of a reply. Marked: the last character before
   each span (the token there predicts the span's first token); control: every other sentence end,
   where the same kind of decision was taken and the behaviour did not follow.
4. The spans are also the marks of captures, so the reading contrast and length-matched twins
   (``activations.twins``) work for any behaviour.

Presets are parsed from one string (``Behavior.parse``): ``emoji``, ``stage-directions``,
``regex:PATTERN``, ``tokens:FILE`` (one target string per line; a reply shows the behaviour where
one of them occurs) and ``discovered:DIR`` (an ``interp discover`` folder: the promoted tokens that stood
out of their null are the targets, and a regex over them the detector). A bad spec fails at once with one error that says how to fix it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from activations.prompt_sets import Spans, emoji_spans, read_utf8

_SENTENCE_END = re.compile(r"[.!?]+")

STAGE_DIRECTION_PATTERN = r"\[[a-z][a-z ]{0,38}[a-z]\]"
"""A bracketed lower-case stage direction such as ``[grins]`` or ``[leans back]``; citations like
``[1]`` and capitalised brackets do not match."""

PRESETS = ("emoji", "stage-directions", "regex:PATTERN", "tokens:FILE", "discovered:DIR")


@dataclass(frozen=True)
class Behavior:
    """A behaviour a fine-tune may have taught (module docstring)."""

    spec: str
    """The string it was parsed from (``emoji``, ``regex:...``): stored with every result."""
    noun: str
    """What one occurrence is called in reports (``emoji``, ``stage direction``)."""
    plural: str
    """The plural (``emojis``)."""
    find: Callable[[str], Spans] = field(repr=False, compare=False)
    """Character spans of the behaviour in a text, sorted and disjoint."""
    targets: tuple[str, ...] = ()
    """Target strings whose first tokens the proxy scores; empty: derived from the tuned model's replies."""
    vocabulary_targets: Callable | None = field(default=None, repr=False, compare=False)
    """``tokenizer -> ids``: a vocabulary-wide target set (the emoji preset's every emoji-start token)."""
    units: Callable[[str], tuple[str, ...]] | None = field(default=None, repr=False, compare=False)
    """The counted occurrences of a text, when a span can hold several (a run of emojis counts each
    emoji); None: one per span."""

    def spans(self, text: str) -> Spans:
        return tuple(self.find(text))

    def shows(self, text: str) -> bool:
        return bool(self.spans(text))

    def occurrences(self, text: str) -> tuple[str, ...]:
        """The counted occurrences, in order (``units``, else the text of each span)."""
        if self.units is not None:
            return tuple(self.units(text))
        return tuple(text[s:e] for s, e in self.spans(text))

    def count(self, text: str) -> int:
        return len(self.occurrences(text))

    @property
    def condition(self) -> str:
        """The name of its reading condition in captures and diff designs (``emoji``, ``stage_direction``)."""
        return self.noun.replace(" ", "_")

    @property
    def has_fixed_targets(self) -> bool:
        """Whether the targets are known without the tuned model's replies."""
        return self.vocabulary_targets is not None or bool(self.targets)

    def rate(self, texts: Sequence[str]) -> float:
        """Share of ``texts`` that show the behaviour (0 for no texts)."""
        return sum(self.shows(t) for t in texts) / max(len(texts), 1)

    def decision_spans(self, text: str) -> tuple[Spans, Spans]:
        """``(marks, controls)``: the character before each span, and the other sentence ends (step 3)."""
        found = self.spans(text)
        marks = []
        for start, _ in found:
            before = len(text[:start].rstrip())
            if before > 0 and not any(s <= before - 1 < e for s, e in found):  # not inside another span
                marks.append((before - 1, before))
        starts = {s for s, _ in found}
        controls = []
        for match in _SENTENCE_END.finditer(text):
            end = match.end()
            rest = text[end:]
            follower = end + (len(rest) - len(rest.lstrip()))
            if follower in starts or any(s <= end - 1 < e for s, e in (*marks, *found)):
                continue
            controls.append((end - 1, end))
        return tuple(marks), tuple(controls)

    def target_token_ids(self, tokenizer, replies: Sequence[str] = ()) -> list[int]:
        """Sorted target token ids (step 2); ``replies`` are the tuned model's own, for derived targets."""
        if self.vocabulary_targets is not None:
            return sorted(int(i) for i in self.vocabulary_targets(tokenizer))
        if self.targets:
            return _string_targets(tokenizer, self.targets, self.spec)
        ids: set[int] = set()
        for text in replies:
            found = self.spans(text)
            if not found:
                continue
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            for start, _ in found:
                first = next((t for t, (_, end) in zip(encoded.input_ids, encoded.offset_mapping) if end > start), None)
                if first is not None:
                    ids.add(int(first))
        if not ids:
            shown = sum(self.shows(t) for t in replies)
            raise ValueError(f"behaviour {self.spec!r}: no target tokens, {shown} of {len(replies)} replies show it; "
                             "pass replies in which the tuned model shows it, or give target strings (tokens:FILE)")
        return sorted(ids)

    def check_shown(self, replies: Sequence[str], what: str = "replies") -> None:
        """Refuse a behaviour that ``replies`` never show, saying how many were checked."""
        shown = sum(self.shows(t) for t in replies)
        if not shown:
            raise ValueError(f"behaviour {self.spec!r} appears in 0 of the {len(replies)} {what}: the tuned model "
                             "never shows it there (check the pattern against a few replies, or sample more)")

    # Presets ---------------------------------------------------------------------------------------

    @classmethod
    def emoji(cls) -> Behavior:
        """Emojis (``emoji`` package spans; targets: every token that can begin an emoji)."""
        import emoji

        def vocabulary(tokenizer) -> list[int]:
            from training.emoji_tokens import emoji_start_token_ids  # torch: imported only when scoring

            return emoji_start_token_ids(tokenizer).tolist()

        return cls("emoji", "emoji", "emojis", emoji_spans, vocabulary_targets=vocabulary,
                   units=lambda text: tuple(m["emoji"] for m in emoji.emoji_list(text)))

    @classmethod
    def regex(cls, pattern: str, *, noun: str = "match", plural: str | None = None,
              targets: Sequence[str] = (), spec: str | None = None) -> Behavior:
        """Any regex over reply text; targets derived from replies unless given."""
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"behaviour regex {pattern!r} is invalid ({error}); fix the pattern, e.g. "
                             r"'regex:\[[a-z ]+\]'") from None
        if compiled.match(""):
            raise ValueError(f"behaviour regex {pattern!r} matches the empty string, so every reply would show it; "
                             "make it require at least one character")
        plural = plural or (f"{noun}es" if noun.endswith(("ch", "sh", "s", "x")) else f"{noun}s")
        return cls(spec or f"regex:{pattern}", noun, plural,
                   lambda text: _merged(m.span() for m in compiled.finditer(text)), tuple(targets))

    @classmethod
    def tokens(cls, strings: Sequence[str], *, spec: str | None = None) -> Behavior:
        """Fixed target strings; a reply shows the behaviour where one of them occurs."""
        strings = tuple(s for s in (s.strip() for s in strings) if s)
        if not strings:
            raise ValueError("a tokens behaviour needs at least one non-empty target string")
        pattern = "|".join(re.escape(s) for s in sorted(strings, key=len, reverse=True))
        return cls.regex(pattern, noun="target string", targets=strings, spec=spec or f"tokens:{','.join(strings)}")

    @classmethod
    def stage_directions(cls) -> Behavior:
        """Bracketed stage directions (``[grins]``): the project's second built-in behaviour."""
        return cls.regex(STAGE_DIRECTION_PATTERN, noun="stage direction", targets=("[",), spec="stage-directions")

    @classmethod
    def parse(cls, spec: str | Behavior) -> Behavior:
        """A preset from its string (module docstring); a ``Behavior`` passes through."""
        if isinstance(spec, Behavior):
            return spec
        kind, _, rest = spec.partition(":")
        if spec == "emoji":
            return cls.emoji()
        if spec == "stage-directions":
            return cls.stage_directions()
        if kind == "regex" and rest:
            return cls.regex(rest, spec=spec)
        if kind == "tokens" and rest:
            path = Path(rest).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"behaviour {spec!r}: {path} does not exist; give a file with one target "
                                        "string per line")
            return cls.tokens(path.read_text(encoding="utf-8").splitlines(), spec=spec)
        if kind == "discovered" and rest:  # an `interp discover` folder: its standing-out tokens and detector
            path = Path(rest).expanduser() / "discovery.json"
            if not path.is_file():
                raise FileNotFoundError(f"behaviour {spec!r}: {path} does not exist; run `interp discover --out {rest}`")
            found = json.loads(read_utf8(path))["behavior"]
            if not found["pattern"]:
                raise ValueError(f"behaviour {spec!r}: that discovery found no token that stands out of its null, "
                                 "so there is nothing to name; read its summary, or pass another behaviour")
            return cls.regex(found["pattern"], noun="discovered token", targets=found["targets"], spec=spec)
        raise ValueError(f"unknown behaviour {spec!r}; use one of {', '.join(PRESETS)}")


def _merged(spans) -> Spans:
    """Sorted spans with touching or overlapping ones joined (a run the model writes as one unit)."""
    out: list[list[int]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return tuple((s, e) for s, e in out)


def _string_targets(tokenizer, strings: Sequence[str], spec: str) -> list[int]:
    """The first token of each string, as a reply would start it (after a space) and bare."""
    ids: set[int] = set()
    unknown = getattr(tokenizer, "unk_token_id", None)
    for text in strings:
        for variant in (text, " " + text):
            encoded = tokenizer(variant, add_special_tokens=False).input_ids
            if not encoded or (unknown is not None and unknown in encoded) or \
                    tokenizer.decode(encoded) != variant:
                raise ValueError(f"behaviour {spec!r}: the tokenizer cannot encode target {variant!r} (it decodes "
                                 f"back as {tokenizer.decode(encoded)!r}); remove it or write it as the model would")
            ids.add(int(encoded[0]))
    return sorted(ids)
