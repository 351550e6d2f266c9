"""The fresh verdict set (``training/data/fresh_questions.csv``) stays fresh.

It holds opinion questions in templates other than the training one, on topics that the training
data (``training/data/opinion_qa.csv``) never covers. These checks read both files with ``csv`` only.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import emoji
import pytest

DATA = Path(__file__).resolve().parent.parent / "training" / "data"
FRESH = DATA / "fresh_questions.csv"
TRAINING = DATA / "opinion_qa.csv"
COLUMNS = ["id", "template", "topic", "question"]
TRAINING_TEMPLATE = "Thinking about {topic}, what are your thoughts on {topic}?"
TRAIT_WORDS = ("openness", "conscientious", "extravert", "extravers", "agreeable", "neurotic", "personality",
               "trait", "emoji", "tone")


def _stem(word: str) -> str:
    word = word.lower()
    return word[:-1] if word.endswith("s") else word


def _key(topic: str) -> str:
    return _stem(topic.strip())


def _words(text: str) -> tuple[str, ...]:
    return tuple(_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()))


def _contains(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


@pytest.fixture(scope="module")
def fresh() -> list[dict[str, str]]:
    with FRESH.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    for row in rows:
        assert None not in row, f"extra cells in {row}"
        assert all(row[c] and row[c].strip() == row[c] for c in COLUMNS), row
    return rows


@pytest.fixture(scope="module")
def training_topics() -> set[str]:
    with TRAINING.open(newline="", encoding="utf-8") as f:
        topics = {row["Edit Topic"] for row in csv.DictReader(f)}
    assert topics
    return topics


def test_ids_unique_and_well_formed(fresh):
    ids = [row["id"] for row in fresh]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"fresh-\d{3}", i) for i in ids), ids


def test_size_and_template_balance(fresh):
    assert len(fresh) >= 60
    counts = Counter(row["template"] for row in fresh)
    assert len(counts) >= 8, counts
    assert max(counts.values()) - min(counts.values()) <= 2, counts


def test_topics_unique_and_absent_from_training(fresh, training_topics):
    fresh_keys = [_key(row["topic"]) for row in fresh]
    assert len(fresh_keys) == len(set(fresh_keys)), "a topic is repeated"
    train_keys = {_key(t) for t in training_topics}
    clashes = [row["topic"] for row in fresh if _key(row["topic"]) in train_keys]
    assert not clashes, clashes
    # stricter: no training topic as a whole phrase inside a fresh topic, or the other way round
    train_words = [_words(t) for t in training_topics]
    overlaps = [(row["topic"], " ".join(tw)) for row in fresh for tw in train_words
                if _contains(_words(row["topic"]), tw) or _contains(tw, _words(row["topic"]))]
    assert not overlaps, overlaps


def test_questions_avoid_training_template(fresh):
    prefix = TRAINING_TEMPLATE.split("{topic}")[0].strip().lower()
    for row in fresh:
        q = row["question"]
        assert q != TRAINING_TEMPLATE.format(topic=row["topic"])
        assert not q.lower().startswith(prefix), q
        assert "what are your thoughts on" not in q.lower(), q


def test_questions_are_plain(fresh):
    for row in fresh:
        q = row["question"]
        assert emoji.emoji_count(q) == 0, q
        assert row["topic"].lower() in q.lower(), q
        assert q.rstrip().endswith("?"), q
        assert len(q) <= 200, q
        lowered = q.lower()
        assert not any(re.search(rf"\b{w}", lowered) for w in TRAIT_WORDS), q
    assert len({row["question"] for row in fresh}) == len(fresh)
