"""The in-context baseline: the base model shown trait demonstrations, no weight changed.

The paper compared PEFT with in-context editing. Here the "edit" is the fine-tune's own data: a
seeded sample of ``shots`` training rows of one study and trait (``training.studies``), put before
every question as earlier chat turns (user question, assistant answer, ...). The held-out question
then follows as the last user turn, exactly as a fine-tuned model would see it.

1. The demonstrations come from the training topics only, so no held-out question or topic is ever
   shown (the split is the fine-tune's, ``training.data.split_by_topic``).
2. They are the same for every question of a measurement: one fixed context, so the prompted
   model is one model, and its prompts share a long token prefix (``activations.sampling`` prefills
   it once per batch). The two studies show the same rows of a trait (the sample does not depend
   on the study), so their in-context rows differ only in the injected emojis.
3. A spec names them on the command line: ``STUDY`` (the measured trait's rows) or ``STUDY:TRAIT``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from training.data import DEFAULT_TEST_FRACTION, OpinionRow
from training.studies import check_study, study_data

Message = dict[str, str]


@dataclass(frozen=True)
class Demonstrations:
    """Which training rows are shown, and how many."""

    study: str
    """``personality`` (emoji-free answers) or ``injection`` (the same with emojis inserted)."""
    trait: str
    shots: int = 4
    """Question-answer pairs shown (at SmolLM2's ~90 tokens a pair, 4 shots make a ~400-token context)."""
    seed: int = 0
    """Seed of the sample of training rows."""
    data_path: str | None = None
    test_fraction: float = DEFAULT_TEST_FRACTION
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_study(self.study, self.trait)
        if self.shots < 1:
            raise ValueError(f"in-context demonstrations need at least 1 shot, got {self.shots}")

    @classmethod
    def parse(cls, spec: str, trait: str | None, **settings) -> Demonstrations:
        """``STUDY`` (with ``trait``) or ``STUDY:TRAIT`` (module docstring, point 3)."""
        study, _, named = spec.partition(":")
        chosen = named or trait
        if not chosen:
            raise ValueError(f"in-context spec {spec!r} names no trait; write STUDY:TRAIT, e.g. personality:extraversion")
        return cls(study.strip(), chosen.strip(), **settings)

    def rows(self) -> tuple[OpinionRow, ...]:
        train = study_data(self.study, self.trait, data_path=self.data_path, test_fraction=self.test_fraction,
                           split_seed=self.split_seed).train
        if self.shots > len(train):
            raise ValueError(f"{self.shots} shots asked but {self.study}/{self.trait} has {len(train)} training rows")
        picks = sorted(random.Random(f"{self.seed}|{self.trait}").sample(range(len(train)), self.shots))
        return tuple(train[i] for i in picks)

    def messages(self) -> list[Message]:
        """The demonstrations as alternating user / assistant turns."""
        turns: list[Message] = []
        for row in self.rows():
            turns += [{"role": "user", "content": row.question}, {"role": "assistant", "content": row.answer}]
        return turns
