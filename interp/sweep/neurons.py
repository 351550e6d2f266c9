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

A confound to read the in-context row with: the prompted question sits after some 400 more tokens
of context. Its contrast holds everything a longer chat changes, not only the demonstrations' voice;
the fine-tune's diff has no such shift. A large overlap is therefore evidence of shared neurons, a
small one weaker evidence against them.
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
from interp.sweep.config import SweepConfig

REDUCTION = "marked_mean"


def question_prompts(tokenizer, trait: str, config: SweepConfig, study: str | None) -> PromptSet:
    """Step 1: the held-out questions as the model reads them (after ``study``'s demonstrations when
    given), each marked at the question."""
    from training.behavior import behavior_prompts
    from training.examples import chat_prompt
    from training.in_context import Demonstrations

    questions = behavior_prompts(_behavior(config, trait))[0]
    history = [] if study is None else Demonstrations(study, trait, config.shots, config.seed).messages()
    texts, marks = [], []
    for question in questions.texts:
        text = chat_prompt(tokenizer, question, history)
        start = text.rindex(question)
        texts.append(text)
        marks.append(((start, start + len(question)),))
    name = "plain" if study is None else f"in-context-{study}"
    return PromptSet(name, questions.ids, tuple(texts), ("",) * len(texts), marks=tuple(marks))


def _behavior(config: SweepConfig, trait: str):
    from training.behavior import BehaviorConfig

    return BehaviorConfig(trait=trait, max_questions=config.questions, neutral_prompts=0, seed=config.seed)


def capture_conditions(config: SweepConfig, trait: str, merged: dict[str, Path], out: Path) -> list[Path]:
    """Step 2: ``out/base/{plain, in-context-S}.h5`` and ``out/fine-tuned-S/plain.h5``."""
    written = []
    base = load_model(config.model)
    sets = [question_prompts(base.tokenizer, trait, config, None),
            *(question_prompts(base.tokenizer, trait, config, study) for study in config.in_context)]
    jobs = [(base, "base", prompt_set) for prompt_set in sets]
    jobs += [(study, f"fine-tuned-{study}", sets[0]) for study in merged]
    for model, folder, prompt_set in jobs:
        loaded = load_model(str(merged[model])) if isinstance(model, str) else model
        path = out / folder / f"{prompt_set.name}.h5"
        capture(loaded, None, prompt_set, path, overwrite=True, batch_size=config.capture_batch,
                reductions=(REDUCTION,), template="raw").close()
        written.append(path)
    return written


@dataclass(frozen=True)
class FlaggedSet:
    name: str
    """``fine-tuned: STUDY`` or ``in-context: STUDY``."""
    contrast: str
    n_flagged: int
    n_outliers: int
    replication: dict[str, Any]
    """The diff's split-half check of its top neurons (``interp.stats.replication.SplitHalf``)."""
    neurons: list[list[int]]
    """Flagged ``[layer, index]``, best first."""
    effects: dict[str, float]
    """``"layer,index"`` -> the standardised effect of every flagged neuron (its sign is the direction)."""


def diff_conditions(config: SweepConfig, out: Path) -> tuple[list[FlaggedSet], set[tuple[int, int]]]:
    """Step 3: one diff per fine-tune and per demonstration set; returns the flagged sets and the
    universe of step 4 (every neuron no diff calls an outlier)."""
    from interp.stats.designs import condition_contrast, model_change
    from interp.stats.diff import DiffConfig, diff

    settings = DiffConfig(delta=config.delta, split_seed=config.seed)
    plain = out / "base" / "plain.h5"
    runs = [(f"fine-tuned: {study}", diff({"plain": plain}, {"plain": out / f"fine-tuned-{study}" / "plain.h5"},
                                          model_change("plain", REDUCTION), settings))
            for study in config.studies]
    runs += [(f"in-context: {study}", diff({"plain": plain, "prompted": out / "base" / f"in-context-{study}.h5"},
                                           None, condition_contrast("prompted", "plain", REDUCTION), settings))
             for study in config.in_context]
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
                               {f"{int(r.layer)},{int(r.index)}": float(getattr(r, f"{contrast}_std"))
                                for r in flagged.itertuples()}))
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
        first = {(layer, index) for layer, index in a.neurons} & universe
        second = {(layer, index) for layer, index in b.neurons} & universe
        test = overlap_sets(first, second, universe, a.name, b.name)
        shared, union = first & second, first | second
        agree = sum(np.sign(a.effects[f"{layer},{index}"]) == np.sign(b.effects[f"{layer},{index}"])
                    for layer, index in shared)
        direction = None
        if shared:
            interval = stats.binomtest(int(agree), len(shared)).proportion_ci(0.95, method="exact")
            direction = {"value": agree / len(shared), "low": interval.low, "high": interval.high, "n": len(shared)}
        found.append(Overlap(a.name, b.name, len(first), len(second), len(shared),
                             len(shared) / len(union) if union else float("nan"), test.expected, test.fold_enrichment,
                             test.p_enrichment, direction))
    return found


def neuron_overlap(config: SweepConfig, trait: str, merged: dict[str, Path], out: Path) -> dict[str, Any]:
    """Steps 1-4 for ``trait`` into ``out``; returns the JSON-able result (written by the caller)."""
    capture_conditions(config, trait, merged, out)
    sets, universe = diff_conditions(config, out)
    return {"trait": trait, "reduction": REDUCTION, "n_universe": len(universe),
            "sets": [asdict(s) for s in sets], "overlaps": [asdict(o) for o in overlaps(sets, universe)]}
