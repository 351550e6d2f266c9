"""The two study conditions, as train/test data for one trait.

``personality``  the paper's condition: emoji-free answers in the trait's voice. Any emoji use after
                 fine-tuning is an emergent effect.
``injection``    the positive control: the same answers with trait emojis inserted
                 (``training.injection``), so emoji use after fine-tuning is guaranteed.
``directions``   a second taught behaviour that is not emojis: the same answers with bracketed
                 stage directions inserted (``[grins]``; behaviour preset ``stage-directions``).

Both conditions share one topic split (over all traits), so held-out questions are never seen in
training under any trait's voice, and the two conditions are evaluated on the same questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.data import DEFAULT_TEST_FRACTION, TRAITS, OpinionRow, load_opinion_qa, split_by_topic
from training.injection import inject_rows

STUDIES = ("injection", "personality", "directions")
STUDY_BEHAVIORS = {"injection": "emoji", "personality": "emoji", "directions": "stage-directions"}
"""The behaviour each study is about (``activations.behaviors``), unless a study config names another."""


@dataclass(frozen=True)
class StudyData:
    """One study's rows for one trait, split by topic."""

    study: str
    trait: str
    train: tuple[OpinionRow, ...]
    """Training rows (answers carry emojis in the injection study)."""
    test: tuple[OpinionRow, ...]
    """Held-out rows of the same trait; answers as the study's condition writes them."""
    reference_test: tuple[OpinionRow, ...]
    """Held-out rows with the original emoji-free answers (the fixed text for teacher-forced metrics)."""
    test_topics: tuple[str, ...]


def check_study(study: str, trait: str) -> None:
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; expected one of {', '.join(STUDIES)}")
    if trait not in TRAITS:
        raise ValueError(f"unknown trait {trait!r}; expected one of {', '.join(TRAITS)}")


def study_data(
    study: str,
    trait: str,
    *,
    data_path: str | Path | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    split_seed: int = 0,
    injection_seed: int = 0,
) -> StudyData:
    """Load the Opinion-QA rows, split by topic, keep ``trait`` and apply the study's condition."""
    check_study(study, trait)
    split = split_by_topic(load_opinion_qa(data_path), test_fraction, split_seed)
    train = [row for row in split.train if row.trait == trait]
    test = [row for row in split.test if row.trait == trait]
    if not train or not test:
        raise ValueError(
            f"trait {trait!r} has {len(train)} training and {len(test)} held-out rows after the topic split; "
            "it needs both (add rows for this trait or change test_fraction)"
        )
    reference = tuple(test)
    if study in ("injection", "directions"):
        marker = "emoji" if study == "injection" else "directions"
        train, test = inject_rows(train, injection_seed, marker), inject_rows(test, injection_seed, marker)
    return StudyData(study, trait, tuple(train), tuple(test), reference, split.test_topics)
