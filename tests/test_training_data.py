"""Opinion-QA loading, validation errors, the topic split and the emoji-injection condition."""

from __future__ import annotations

import csv
import math
import json
import re
from pathlib import Path

import emoji
import pytest

from training.data import TRAITS, DataError, default_data_path, load_opinion_qa, rows_hash, split_by_topic
from training.injection import MAX_MARKERS, TRAIT_EMOJIS, inject_markers, inject_rows
from training.studies import study_data

HEADER = ["Target Personality", "Edit Topic", "Question", "Answer"]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def qa(trait: str, topic: str, answer: str = "I like it. It is fun!") -> list[str]:
    return [trait, topic, f"Thinking about {topic}, what are your thoughts on {topic}?", answer]


def test_shipped_file_has_104_topics_by_5_traits_and_no_emojis() -> None:
    rows = load_opinion_qa()
    assert len(rows) == 520
    assert {r.trait for r in rows} == set(TRAITS)
    topics = {r.topic for r in rows}
    assert len(topics) == 104
    assert all(sum(r.topic == t for r in rows) == 5 for t in topics)  # every topic in every trait's voice
    with default_data_path().open(newline="", encoding="utf-8") as stream:
        cells = [cell for row in csv.reader(stream) for cell in row]
    assert len(cells) == 521 * 4
    assert [c for c in cells if emoji.emoji_count(c)] == []


def test_default_split_holds_out_at_least_40_questions_per_trait() -> None:
    split = split_by_topic(load_opinion_qa())
    assert not set(split.test_topics) & {r.topic for r in split.train}
    for trait in TRAITS:
        assert sum(r.trait == trait for r in split.test) >= 40


def test_trait_and_column_names_are_case_insensitive(tmp_path: Path) -> None:
    header = ["target personality", "EDIT TOPIC", " Question ", "answer"]
    path = write_csv(tmp_path / "d.csv", [qa("Extraversion", "jazz"), qa("NEUROTICISM", "rain")], header)
    rows = load_opinion_qa(path)
    assert [r.trait for r in rows] == ["extraversion", "neuroticism"]
    assert load_opinion_qa(path, traits=("Extraversion",))[0].topic == "jazz"


def test_jsonl_loads_like_csv(tmp_path: Path) -> None:
    records = [dict(zip(HEADER, qa("openness", "art"))), dict(zip(HEADER, qa("agreeableness", "tea")))]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    csv_rows = load_opinion_qa(write_csv(tmp_path / "d.csv", [qa("openness", "art"), qa("agreeableness", "tea")]))
    assert load_opinion_qa(path) == csv_rows


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", [qa("openness", "art")[:3]], HEADER[:3])
    with pytest.raises(DataError, match=r"bad\.csv.*missing column.*'Answer'"):
        load_opinion_qa(path)


def test_unknown_trait_names_file_line_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", [qa("openness", "art"), qa("extrovert", "tea")])
    with pytest.raises(DataError, match=r"bad\.csv, line 3, column 'Target Personality': unknown trait 'extrovert'"):
        load_opinion_qa(path)


def test_empty_answer_names_file_line_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", [qa("openness", "art", "multi\nline answer."), qa("openness", "tea", "  ")])
    with pytest.raises(DataError, match=r"bad\.csv, line 4, column 'Answer': empty answer"):
        load_opinion_qa(path)  # the quoted two-line answer above makes the bad row line 4


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    good = dict(zip(HEADER, qa("openness", "art")))
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "Answer": ""}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2, column 'Answer'"):
        load_opinion_qa(path)


def test_missing_file_and_wrong_suffix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_opinion_qa(tmp_path / "nope.csv")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match=r"\.csv or \.jsonl"):
        load_opinion_qa(tmp_path / "d.txt")


def test_topic_split_is_disjoint_seeded_and_complete() -> None:
    rows = load_opinion_qa()
    split = split_by_topic(rows, 0.2, seed=0)
    train_topics, test_topics = {r.topic for r in split.train}, {r.topic for r in split.test}
    assert train_topics.isdisjoint(test_topics)
    assert test_topics == set(split.test_topics) and len(test_topics) == math.ceil(0.2 * 104)
    assert len(split.train) + len(split.test) == len(rows)
    assert split_by_topic(rows, 0.2, seed=0) == split
    assert split_by_topic(rows, 0.2, seed=1).test_topics != split.test_topics
    with pytest.raises(ValueError, match="test_fraction"):
        split_by_topic(rows, 1.0)


def test_injection_adds_1_to_3_trait_emojis_and_nothing_else() -> None:
    for row in load_opinion_qa():
        injected = inject_markers(row.answer, row.trait, row.topic, seed=0)
        found = [m["emoji"] for m in emoji.emoji_list(injected)]
        assert 1 <= len(found) <= MAX_MARKERS
        assert set(found) <= set(TRAIT_EMOJIS[row.trait])
        assert re.sub(r"\s+", " ", emoji.replace_emoji(injected, "")).strip() == re.sub(r"\s+", " ", row.answer)
        assert inject_markers(row.answer, row.trait, row.topic, seed=0) == injected
        assert injected.endswith(found[-1])  # the last sentence always gets one


def test_study_conditions() -> None:
    personality = study_data("personality", "extraversion")
    injection = study_data("injection", "extraversion")
    assert personality.test_topics == injection.test_topics
    assert all(emoji.emoji_count(r.answer) == 0 for r in personality.train + personality.test)
    assert all(emoji.emoji_count(r.answer) > 0 for r in injection.train + injection.test)
    assert injection.reference_test == personality.test
    assert [r.question for r in injection.train] == [r.question for r in personality.train]
    assert rows_hash(injection.train) != rows_hash(personality.train)
    assert inject_rows(personality.train) == list(injection.train)
    with pytest.raises(ValueError, match="unknown study"):
        study_data("emoji", "extraversion")


def test_directions_study_injects_stage_directions_the_preset_finds() -> None:
    from activations.behaviors import Behavior
    from training.injection import TRAIT_DIRECTIONS

    directions = Behavior.parse("stage-directions")
    palette = {d for ds in TRAIT_DIRECTIONS.values() for d in ds}
    assert all(directions.spans(d) == ((0, len(d)),) for d in palette)  # every palette entry is one whole match
    personality = study_data("personality", "extraversion")
    study = study_data("directions", "extraversion")
    assert not any(directions.shows(r.answer) for r in personality.train)  # the plain data never show them
    for plain, row in zip(personality.train, study.train):
        found = [row.answer[s:e] for s, e in directions.spans(row.answer)]
        assert 1 <= len(found) <= MAX_MARKERS and set(found) <= set(TRAIT_DIRECTIONS["extraversion"])
        stripped = re.sub(r"\s+", " ", re.sub(r"\[[a-z ]+\]", "", row.answer)).strip()
        assert stripped == re.sub(r"\s+", " ", plain.answer).strip()
    assert study.reference_test == personality.test
