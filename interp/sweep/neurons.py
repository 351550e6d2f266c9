"""Does prompting recruit the neurons the fine-tune changed?

For one trait:

1. Prompts: the held-out questions, each rendered in the chat template alone (``plain``) and after
   the in-context demonstrations (``in-context-STUDY``, ``training.in_context``). The question's own
   characters are marked, so every value is the mean over the question's tokens: the same tokens in
   every condition, with the template, the demonstrations and position 0 left out.
2. Caches of the marked means: the base model on every prompt set, each fine-tune on ``plain``.
3. Diffs with the study's machinery (``interp.stats.diff``: minimum-effect tests at ``delta`` token
   SDs, Benjamini-Hochberg across all neurons, outliers excluded from the flagged sets):
   - fine-tune STUDY: ``model_change``, merged minus base, on the plain questions;
   - in-context STUDY: ``condition_contrast`` on the base model, prompted minus plain, paired by question.
4. For every pair of flagged sets: the Jaccard overlap, and the hypergeometric test of the overlap
   against two sets of the same sizes drawn at random from the neurons no diff calls an outlier
   (``interp.stats.overlap``: the expected overlap, the fold enrichment, P(overlap >= observed)).
   Of the shared neurons, the share the two diffs move in the same direction (exact interval).

Random sets are a weak control: some neurons change under almost any fine-tune or any added
context. So both sides get a matched control from another swept trait C (the next one in the
sweep's order), on the same questions of T:
- in-context with C's demonstrations (the same number of shots, a context of about the same
  length: the length and position confound of the prompted question, without T's voice);
- C's fine-tune on the first study's rows (same recipe and data size, another voice).
Prompting recruits T's fine-tune neurons *for the trait* only where T's demonstrations overlap T's
fine-tune more than C's demonstrations do, and more than C's fine-tune does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from activations import load_model
from activations.capture import capture
from activations.prompt_sets import PromptSet
from interp.stats.overlap import overlap_sets
from interp.sweep.config import TraitSweepConfig
from interp.sweep.measure import Condition, behavior_config

REDUCTION = "marked_mean"


def question_prompts(tokenizer, trait: str, config: TraitSweepConfig, study: str | None,
                     shown: str | None = None) -> PromptSet:
    """Step 1: ``trait``'s held-out questions as the model reads them (after ``study``'s
    demonstrations of trait ``shown``, default ``trait``, when ``study`` is given), each marked at
    the question."""
    from training.behavior import behavior_prompts
    from training.examples import chat_prompt
    from training.in_context import Demonstrations

    questions = behavior_prompts(behavior_config(config, Condition(trait, "base")))[0]
    history = [] if study is None else Demonstrations(study, shown or trait, config.shots, config.seed).messages()
    texts, marks = [], []
    for question in questions.texts:
        text = chat_prompt(tokenizer, question, history)
        start = text.rindex(question)
        texts.append(text)
        marks.append(((start, start + len(question)),))
    name = "plain" if study is None else f"in-context-{study}-{shown or trait}"
    return PromptSet(name, questions.ids, tuple(texts), ("",) * len(texts), marks=tuple(marks))


@dataclass(frozen=True)
class Arm:
    """One side of a diff: a fine-tune (merged vs base on the plain questions) or in-context
    demonstrations (base with vs without them), of ``study``'s rows of ``trait``."""

    kind: str
    """``fine-tuned`` or ``in-context``."""
    study: str
    trait: str
    control: bool = False
    """A matched control from another trait (module docstring)."""

    @property
    def name(self) -> str:
        return f"{self.kind}: {self.study} ({self.trait}{', control' if self.control else ''})"

    @property
    def file(self) -> str:
        """The cache this arm reads besides ``base/plain.h5``."""
        if self.kind == "fine-tuned":
            return f"fine-tuned-{self.study}-{self.trait}/plain.h5"
        return f"base/in-context-{self.study}-{self.trait}.h5"


def control_trait(config: TraitSweepConfig, trait: str) -> str | None:
    """The next swept trait after ``trait`` (cyclically); None when only one is swept."""
    if len(config.traits) < 2:
        return None
    return config.traits[(config.traits.index(trait) + 1) % len(config.traits)]


def arms(config: TraitSweepConfig, trait: str) -> list[Arm]:
    """Every arm of ``trait``'s overlap: its fine-tunes, its demonstrations, then the controls."""
    found = [Arm("fine-tuned", study, trait) for study in config.studies]
    found += [Arm("in-context", study, trait) for study in config.in_context]
    other = control_trait(config, trait)
    if other is not None:
        found += [Arm("in-context", config.in_context[0], other, True), Arm("fine-tuned", config.studies[0], other, True)]
    return found


def capture_conditions(config: TraitSweepConfig, trait: str, merged: dict[tuple[str, str], Path], out: Path) -> list[Path]:
    """Step 2: ``out/base/plain.h5``, then one cache per arm (``Arm.file``); ``merged`` maps
    (study, trait) to each fine-tune's merged model."""
    written = []
    base = load_model(config.model)
    plain = question_prompts(base.tokenizer, trait, config, None)
    jobs = [(base, "base/plain.h5", plain)]
    for arm in arms(config, trait):
        if arm.kind == "in-context":
            jobs.append((base, arm.file, question_prompts(base.tokenizer, trait, config, arm.study, arm.trait)))
        else:
            jobs.append((merged[arm.study, arm.trait], arm.file, plain))
    for model, file, prompt_set in jobs:
        loaded = load_model(str(model)) if isinstance(model, Path) else model
        path = out / file
        capture(loaded, None, prompt_set, path, overwrite=True, batch_size=config.capture_batch,
                reductions=(REDUCTION,), template="raw").close()
        written.append(path)
    return written


@dataclass(frozen=True)
class FlaggedSet:
    name: str
    """``Arm.name``, e.g. ``in-context: personality (extraversion)``."""
    contrast: str
    n_flagged: int
    n_outliers: int
    replication: dict[str, Any]
    """The diff's split-half check of its top neurons (``interp.stats.replication.SplitHalf``)."""
    neurons: list[list[int]]
    """Flagged ``[layer, index]``, best first."""
    effects: list[float]
    """The standardised effect of each flagged neuron, in ``neurons`` order (its sign is the direction)."""


def diff_conditions(config: TraitSweepConfig, trait: str, out: Path) -> tuple[list[FlaggedSet], set[tuple[int, int]]]:
    """Step 3: one diff per arm; returns the flagged sets and the universe of step 4 (every neuron
    no diff calls an outlier)."""
    from interp.stats.designs import condition_contrast, model_change
    from interp.stats.diff import DiffConfig, diff_caches

    settings = DiffConfig(delta=config.delta, split_seed=config.seed)
    plain = out / "base" / "plain.h5"
    runs = []
    for arm in arms(config, trait):
        if arm.kind == "fine-tuned":
            result = diff_caches({"plain": plain}, {"plain": out / arm.file}, model_change("plain", REDUCTION), settings)
        else:
            result = diff_caches({"plain": plain, "prompted": out / arm.file}, None,
                          condition_contrast("prompted", "plain", REDUCTION), settings)
        runs.append((arm.name, result))
    everything = set(zip(runs[0][1].table["layer"].astype(int), runs[0][1].table["index"].astype(int)))
    outliers: set[tuple[int, int]] = set()
    sets = []
    for name, result in runs:
        table = result.table
        outliers |= set(zip(table.loc[table["outlier"], "layer"].astype(int), table.loc[table["outlier"], "index"].astype(int)))
        contrast = result.design.specific[0]
        flagged = table[table["flagged"]].sort_values("rank")
        replication = asdict(result.replication[0]) if result.replication else {}
        sets.append(FlaggedSet(name, contrast, len(flagged), int(table["outlier"].sum()), replication,
                               [[int(r.layer), int(r.index)] for r in flagged.itertuples()],
                               [round(float(getattr(r, f"{contrast}_std")), 4) for r in flagged.itertuples()]))
    return sets, everything - outliers


@dataclass(frozen=True)
class Overlap:
    first: str
    second: str
    n_first: int
    n_second: int
    n_shared: int
    jaccard: float
    expected_shared: float
    """Shared neurons expected of two random sets of these sizes."""
    fold_enrichment: float
    p_enrichment: float
    same_direction: dict[str, float] | None
    """Of the shared neurons, the share moved the same way by both (value, low, high; exact binomial)."""


def overlaps(sets: list[FlaggedSet], universe: set[tuple[int, int]]) -> list[Overlap]:
    """Step 4, for every pair of ``sets`` within ``universe``."""
    found = []
    for a, b in combinations(sets, 2):
        signs = [{(layer, index): np.sign(e) for (layer, index), e in zip(s.neurons, s.effects)} for s in (a, b)]
        first, second = set(signs[0]) & universe, set(signs[1]) & universe
        test = overlap_sets(first, second, universe, a.name, b.name)
        shared, union = first & second, first | second
        agree = sum(signs[0][n] == signs[1][n] for n in shared)
        direction = None
        if shared:
            interval = stats.binomtest(int(agree), len(shared)).proportion_ci(0.95, method="exact")
            direction = {"value": agree / len(shared), "low": interval.low, "high": interval.high, "n": len(shared)}
        found.append(Overlap(a.name, b.name, len(first), len(second), len(shared),
                             len(shared) / len(union) if union else float("nan"), test.expected, test.fold_enrichment,
                             test.p_enrichment, direction))
    return found


def neuron_overlap(config: TraitSweepConfig, trait: str, merged: dict[tuple[str, str], Path], out: Path) -> dict[str, Any]:
    """Steps 1-4 for ``trait`` into ``out``; returns the JSON-able result (written by the caller)."""
    capture_conditions(config, trait, merged, out)
    sets, universe = diff_conditions(config, trait, out)
    return {"trait": trait, "control_trait": control_trait(config, trait), "reduction": REDUCTION,
            "n_universe": len(universe),
            "sets": [asdict(s) for s in sets], "overlaps": [asdict(o) for o in overlaps(sets, universe)]}
