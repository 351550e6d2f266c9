"""Prompt sets: the texts a model reads while its neurons are recorded, and how they are templated.

Built-in sets (package data in ``activations/prompts/``):
  ``emoji``        texts that contain emojis
  ``emoji-free``   the same texts with the emojis removed (``emoji.replace_emoji``), same ids, so
                   the two sets form matched pairs
  ``neutral``      texts without emojis on ordinary topics
A user's own file works too: ``.txt`` (one prompt per line), ``.jsonl`` (objects with ``text`` and
optional ``id`` / ``category`` / ``context`` / ``marks`` / ``controls``) or ``.csv`` (a ``text`` column;
optional ``id`` / ``category`` / ``context``).

Marks say which characters of a text the analysis is about (``marks``: e.g. its emojis) and which
matched characters it is compared with (``controls``: e.g. sentence ends without an emoji); capture
turns them into token roles (``activations.roles``). A prompt without explicit marks is marked at its
emojis. ``context`` is a user turn shown before the text when the text is read as the assistant's
reply (template ``assistant``), so a model's own replies can be read in the chat they belong to.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import emoji
from jinja2.exceptions import TemplateError

if TYPE_CHECKING:  # a prompt file is read and checked without loading transformers
    from transformers import PreTrainedTokenizerBase

BUILTIN_SETS = ("emoji", "emoji-free", "neutral", "generic")
FILE_SUFFIXES = (".txt", ".jsonl", ".csv")
TEMPLATES = ("raw", "user", "assistant")
DEFAULT_TEMPLATE = "user"
"""The model reads each text as a user turn, with the generation prompt after it, because that is how
a chat fine-tune meets text in use: the neurons we record are the ones active when the model is about
to answer (and ``last`` is the position that predicts the first token of its reply)."""

_ACCEPTED = f"a built-in set ({', '.join(BUILTIN_SETS)}) or a {'/'.join(FILE_SUFFIXES)} file"


Span = tuple[int, int]
"""A character range ``[start, end)`` of a prompt's text."""
Spans = tuple[Span, ...]


def emoji_spans(text: str) -> Spans:
    """Character spans of the emojis in ``text``; a run of adjacent emojis is one span (one token
    sequence the model reads as a unit), skin tones and ZWJ sequences are inside their emoji."""
    spans: list[list[int]] = []
    for found in emoji.emoji_list(text):
        start, end = int(found["match_start"]), int(found["match_end"])
        if spans and spans[-1][1] == start:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return tuple((start, end) for start, end in spans)


def _check_spans(name: str, prompt_id: str, text: str, spans: Spans, what: str) -> Spans:
    checked = []
    for span in spans:
        if len(span) != 2 or not all(isinstance(v, int) for v in span) or not 0 <= span[0] < span[1] <= len(text):
            raise ValueError(f"prompt set {name!r}, prompt {prompt_id!r}: {what} span {list(span)} is not a character "
                             f"range [start, end) inside its {len(text)}-character text")
        checked.append((int(span[0]), int(span[1])))
    return tuple(sorted(checked))


@dataclass(frozen=True)
class PromptSet:
    """An ordered, named collection of prompts with stable ids."""

    name: str
    """Built-in name or the file it was read from."""
    ids: tuple[str, ...]
    """One unique id per prompt; matched sets (emoji / emoji-free) share ids."""
    texts: tuple[str, ...]
    """The prompt texts, before any chat template."""
    categories: tuple[str, ...]
    """A free-form category per prompt ("" when the source has none)."""
    marks: tuple[Spans, ...] | None = None
    """Per prompt, the character spans under study; None marks each text's emojis (``emoji_spans``)."""
    controls: tuple[Spans, ...] | None = None
    """Per prompt, matched character spans to compare the marks with (None: none)."""
    contexts: tuple[str, ...] | None = None
    """Per prompt, a user turn read before the text (template ``assistant`` only; None: none)."""

    def __post_init__(self) -> None:
        if not self.texts:
            raise ValueError(f"prompt set {self.name!r} is empty; give it at least one prompt")
        if not len(self.ids) == len(self.texts) == len(self.categories):
            raise ValueError(
                f"prompt set {self.name!r}: {len(self.ids)} ids, {len(self.texts)} texts and "
                f"{len(self.categories)} categories; they must have one entry per prompt"
            )
        seen: set[str] = set()
        for prompt_id in self.ids:
            if prompt_id in seen:
                raise ValueError(f"prompt set {self.name!r}: id {prompt_id!r} occurs twice; ids must be unique")
            seen.add(prompt_id)
        not_text = [prompt_id for prompt_id, text in zip(self.ids, self.texts) if not isinstance(text, str)]
        if not_text:
            raise ValueError(f"prompt set {self.name!r}: prompts {not_text[:5]} have no text (missing or not a string); "
                             "give every prompt a text or remove it")
        blank = [prompt_id for prompt_id, text in zip(self.ids, self.texts) if not text.strip()]
        if blank:
            raise ValueError(f"prompt set {self.name!r}: prompts {blank[:5]} have empty text; remove them")
        for field_name in ("marks", "controls", "contexts"):
            values = getattr(self, field_name)
            if values is not None and len(values) != len(self.texts):
                raise ValueError(f"prompt set {self.name!r}: {len(values)} {field_name} for {len(self.texts)} prompts")
        for field_name in ("marks", "controls"):
            values = getattr(self, field_name)
            if values is not None:
                object.__setattr__(self, field_name, tuple(
                    _check_spans(self.name, i, t, tuple(tuple(span) for span in spans), field_name[:-1])
                    for i, t, spans in zip(self.ids, self.texts, values)))

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def sha(self) -> str:
        """A short sha256 of ids, texts and (when given) marks, controls and contexts: equal prompts in
        equal order, equal hash."""
        payload: list = [list(self.ids), list(self.texts)]
        extras = {name: getattr(self, name) for name in ("marks", "controls", "contexts")
                  if getattr(self, name) is not None}
        if extras:
            payload.append({name: [list(map(list, v)) if name != "contexts" else v for v in values]
                            for name, values in extras.items()})
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()[:16]

    def marks_of(self, index: int) -> Spans:
        """The marked spans of prompt ``index``: the given ones, else its emojis."""
        return self.marks[index] if self.marks is not None else emoji_spans(self.texts[index])

    def controls_of(self, index: int) -> Spans:
        return self.controls[index] if self.controls is not None else ()

    def context_of(self, index: int) -> str | None:
        return self.contexts[index] if self.contexts is not None else None

    def subset(self, indices: list[int] | range, name: str | None = None) -> PromptSet:
        """The prompts at ``indices`` (in that order), with their marks, controls and contexts."""
        pick = lambda values: None if values is None else tuple(values[i] for i in indices)  # noqa: E731
        return PromptSet(name or self.name, pick(self.ids), pick(self.texts), pick(self.categories),
                         pick(self.marks), pick(self.controls), pick(self.contexts))

    def head(self, n: int | None) -> PromptSet:
        """The first ``n`` prompts (all when None or larger than the set)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"a prompt set needs at least one prompt; asked for the first {n}")
        return self.subset(range(n))

    @classmethod
    def from_texts(cls, texts: list[str], name: str = "inline") -> PromptSet:
        """Prompts given directly as strings; ids are ``{name}-0001``, ``{name}-0002``, ..."""
        ids = tuple(f"{name}-{number:04d}" for number in range(1, len(texts) + 1))
        return cls(name, ids, tuple(texts), ("",) * len(texts))


def strip_emoji(text: str) -> str:
    """The text with every emoji removed and runs of whitespace collapsed to one space."""
    return " ".join(emoji.replace_emoji(text, "").split())


def _records_to_set(name: str, records: list[dict[str, object]]) -> PromptSet:
    stem = Path(name).stem
    ids = tuple(str(r.get("id") or f"{stem}-{n:04d}") for n, r in enumerate(records, start=1))
    bad = [prompt_id for prompt_id, r in zip(ids, records) if not isinstance(r.get("text"), str)]
    if bad:
        raise ValueError(f"{name}: prompts {bad[:5]} have no text (a missing cell, or null / a number in JSON); "
                         "give every prompt a string text or remove it")
    texts = tuple(str(r["text"]) for r in records)
    categories = tuple(str(r.get("category") or "") for r in records)

    def optional(key: str) -> tuple | None:
        if not any(r.get(key) not in (None, "") for r in records):
            return None
        if key == "context":
            return tuple(str(r.get(key) or "") for r in records)
        return tuple(tuple(tuple(span) for span in (r.get(key) or ())) for r in records)

    return PromptSet(name, ids, texts, categories, optional("marks"), optional("controls"), optional("context"))


def read_utf8(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is an error naming the file, line and column, and
    the fix. A leading byte-order mark (spreadsheet exports write one) is dropped."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(f"{path}:{line}:{column}: byte 0x{data[error.start]:02x} is not UTF-8 text; save the file "
                         f"as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}`)") from None


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    records = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg}); each line must be one object") from None
        if not isinstance(record, dict) or "text" not in record:
            raise ValueError(f'{path}:{number}: each line must be an object with a "text" field (and optional "id")')
        records.append(record)
    return records


def _read_csv(path: Path) -> list[dict[str, str]]:
    # newline="": quoted cells may hold line breaks, which csv reads itself
    reader = csv.DictReader(io.StringIO(read_utf8(path), newline=""))
    columns = reader.fieldnames or []
    if "text" not in columns:
        raise ValueError(f"{path} has columns {columns}, but needs a 'text' column (optional: 'id', 'category')")
    return list(reader)


def _read_txt(path: Path) -> list[dict[str, str]]:
    return [{"text": line.strip()} for line in read_utf8(path).splitlines() if line.strip()]


_READERS = {".jsonl": _read_jsonl, ".csv": _read_csv, ".txt": _read_txt}


def read_prompt_file(path: str | Path) -> PromptSet:
    """A user's prompt file (``.txt`` / ``.jsonl`` / ``.csv``) as a ``PromptSet`` named by its path."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist; pass {_ACCEPTED}")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"prompt file {path} has suffix {path.suffix!r}; use {'/'.join(FILE_SUFFIXES)}")
    records = reader(path)
    if not records:
        raise ValueError(f"prompt file {path} holds no prompts; add at least one")
    return _records_to_set(str(path), records)


def _builtin(name: str) -> PromptSet:
    source = "emoji" if name == "emoji-free" else name
    data = resources.files("activations") / "prompts" / f"{source}.jsonl"
    records = _read_jsonl(Path(str(data)))
    prompts = _records_to_set(name, records)
    if name != "emoji-free":
        return prompts
    return PromptSet(name, prompts.ids, tuple(strip_emoji(t) for t in prompts.texts), prompts.categories)


def load_prompt_set(source: str | Path) -> PromptSet:
    """A built-in set by name, or a user's prompt file by path."""
    if str(source) in BUILTIN_SETS:
        return _builtin(str(source))
    path = Path(source).expanduser()
    if path.exists() or path.suffix.lower() in FILE_SUFFIXES or len(path.parts) > 1:
        return read_prompt_file(path)
    raise ValueError(f"unknown prompt set {str(source)!r}; pass {_ACCEPTED}")


def apply_template(
    tokenizer: PreTrainedTokenizerBase, text: str, template: str = DEFAULT_TEMPLATE, context: str | None = None
) -> str:
    """The string the model reads for ``text``: as is (``raw``) or inside the chat template.

    ``user``: the text is a user message and the generation prompt follows it;
    ``assistant``: the text is the assistant's reply (no generation prompt), after the user turn
    ``context`` when one is given.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    if template == "raw":
        return text
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"template {template!r} needs a tokenizer with a chat template and this one has none; "
                         "pass --template raw")
    if context is not None and template != "assistant":
        raise ValueError(f"a context (user turn) is read before an assistant reply; template {template!r} takes none: "
                         "use template 'assistant' or drop the context")
    role = "user" if template == "user" else "assistant"
    messages = [{"role": role, "content": text}]
    if context:
        messages.insert(0, {"role": "user", "content": context})
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=template == "user")
    except TemplateError as error:  # e.g. templates that insist a conversation opens with a user turn
        raise ValueError(f"this tokenizer's chat template rejects template {template!r} ({error}); "
                         "pass --template user or --template raw") from None


def template_adds_special_tokens(template: str) -> bool:
    """Whether the tokenizer should add its own special tokens (BOS) for this template.

    Chat templates already spell out their special tokens; adding them again would double a BOS.
    """
    return template == "raw"
