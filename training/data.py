"""Opinion-QA data: questions on a topic answered in the voice of one Big-Five trait.

The schema is the one of Jain, Wu et al. (2024), so their public data set loads unchanged: columns
``Target Personality``, ``Edit Topic``, ``Question``, ``Answer`` in a ``.csv`` or ``.jsonl`` file.
Column names and trait names are matched case-insensitively; surrounding whitespace is ignored.
The shipped file (``training/data/opinion_qa.csv``) holds 104 topics x 5 traits, written for this
project, and no emojis.

Train and test sets are split by *topic*, never by row: every trait answers the same questions, so
a row split would put the test question in training under another trait's voice.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
COLUMNS = {"trait": "Target Personality", "topic": "Edit Topic", "question": "Question", "answer": "Answer"}
"""Our field name -> the column name of the paper's schema."""
FILE_SUFFIXES = (".csv", ".jsonl")
DEFAULT_TEST_FRACTION = 0.4
"""Share of topics held out: 42 of the shipped 104, so every trait has at least 40 held-out questions
(enough for question-level intervals) and 62 training topics."""


class DataError(ValueError):
    """A data file that does not follow the Opinion-QA schema; the message names file, line and column."""


@dataclass(frozen=True)
class OpinionRow:
    """One question answered in the voice of one trait."""

    trait: str
    """Lower-case Big-Five trait, one of ``TRAITS``."""
    topic: str
    """The topic the question is about; the unit of the train/test split."""
    question: str
    """The user's question."""
    answer: str
    """The answer in the trait's voice (the assistant turn that training imitates)."""


@dataclass(frozen=True)
class TopicSplit:
    """Rows split so that no topic appears on both sides."""

    train: tuple[OpinionRow, ...]
    test: tuple[OpinionRow, ...]
    test_topics: tuple[str, ...]
    """Sorted held-out topics."""


def default_data_path() -> Path:
    """The shipped Opinion-QA file."""
    return Path(__file__).resolve().parent / "data" / "opinion_qa.csv"


def _column_map(path: Path, header: list[str]) -> dict[str, str]:
    """Our field name -> the header spelling found in the file (case-insensitive match)."""
    found = {name.strip().lower(): name for name in header if name is not None}
    missing = [column for column in COLUMNS.values() if column.lower() not in found]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(m) for m in missing)}; found {header!r}; "
            f"an Opinion-QA file needs {', '.join(repr(c) for c in COLUMNS.values())}"
        )
    return {field: found[column.lower()] for field, column in COLUMNS.items()}


def _read_records(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, record) pairs; line numbers count from 1 as an editor shows them."""
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            _column_map(path, list(reader.fieldnames or []))
            records = []
            start = reader.line_num + 1
            for record in reader:
                records.append((start, record))
                start = reader.line_num + 1  # quoted answers may span several lines
            return records
    records = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {number}: not valid JSON ({error.msg}); one object per line") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object with the Opinion-QA columns")
            records.append((number, record))
    if records:
        header = sorted({key for _, record in records for key in record})
        _column_map(path, header)
    return records


def _parse_row(path: Path, line: int, record: dict[str, str], columns: dict[str, str]) -> OpinionRow:
    values = {}
    for field, column in COLUMNS.items():
        value = record.get(columns[field])
        if value is None:
            raise DataError(f"{path}, line {line}, column {column!r}: missing; every row needs all four columns")
        text = str(value).strip()
        if not text:
            raise DataError(f"{path}, line {line}, column {column!r}: empty {field}; fill it in or drop the row")
        values[field] = text
    trait = values["trait"].lower()
    if trait not in TRAITS:
        raise DataError(
            f"{path}, line {line}, column {COLUMNS['trait']!r}: unknown trait {values['trait']!r}; "
            f"expected one of {', '.join(TRAITS)} (any case)"
        )
    return OpinionRow(trait, values["topic"], values["question"], values["answer"])


def load_opinion_qa(path: str | Path | None = None, traits: tuple[str, ...] | None = None) -> list[OpinionRow]:
    """Read an Opinion-QA ``.csv`` / ``.jsonl`` (default: the shipped file), optionally keeping some traits."""
    path = Path(path).expanduser() if path is not None else default_data_path()
    if not path.is_file():
        raise FileNotFoundError(f"Opinion-QA file {path} not found; pass an existing .csv or .jsonl file")
    if path.suffix not in FILE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use {' or '.join(FILE_SUFFIXES)}")
    wanted = tuple(t.lower() for t in traits) if traits else TRAITS
    unknown = [t for t in wanted if t not in TRAITS]
    if unknown:
        raise ValueError(f"unknown trait(s) {unknown}; expected one of {', '.join(TRAITS)}")
    records = _read_records(path)
    if not records:
        raise DataError(f"{path}: no rows; an Opinion-QA file needs at least one question")
    columns = _column_map(path, sorted({key for _, record in records for key in record if key is not None}))
    rows = [_parse_row(path, line, record, columns) for line, record in records]
    return [row for row in rows if row.trait in wanted]


def split_by_topic(rows: list[OpinionRow], test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> TopicSplit:
    """Hold out ``ceil(test_fraction * n_topics)`` topics, chosen by a seeded shuffle of the sorted topics."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    topics = sorted({row.topic for row in rows})
    if len(topics) < 2:
        raise ValueError(f"a topic split needs at least 2 topics, the rows have {len(topics)}")
    random.Random(seed).shuffle(topics)
    n_test = min(max(1, math.ceil(test_fraction * len(topics))), len(topics) - 1)
    held_out = set(topics[:n_test])
    return TopicSplit(
        train=tuple(row for row in rows if row.topic not in held_out),
        test=tuple(row for row in rows if row.topic in held_out),
        test_topics=tuple(sorted(held_out)),
    )


def rows_hash(rows: list[OpinionRow] | tuple[OpinionRow, ...]) -> str:
    """A short sha256 of the rows in order: the same training data, the same hash."""
    payload = json.dumps([[r.trait, r.topic, r.question, r.answer] for r in rows], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
