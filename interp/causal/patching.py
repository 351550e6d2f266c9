"""Sufficiency and necessity of flagged neurons by cross-model activation patching.

1. Measure base and merged models clean.
2. Sufficiency (base <- merged): run the base model with the top-k neurons set to the merged
   model's activations on the same tokens. Teacher-forced metrics patch the values recorded on
   each forward batch (position-aligned: same prompts, same tokenisation, same padding).
   Generation-time metrics use ``generate_cross_patched``: the merged model runs alongside and
   supplies its values at every step for the tokens generated so far; this is exact per-step
   patching, not an approximation by mean activations.
3. Necessity (merged <- base): the same with roles swapped.
4. ``recovered = (patched - base) / (merged - base)`` per metric: 1 means the neurons carry the
   whole difference (sufficiency), and for necessity 0 means patching base values in removed it.
5. Optionally the same for matched random sets (mean and 95% interval), as in dose-response.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from interp.causal.dose_response import _set_seed
from interp.causal.evaluate import Clean, CrossPatch, EvalSuite, measure
from interp.causal.results import Interval, save_with_generations, summarise, text_records
from interp.interventions import Neuron, NeuronSet, layer_widths

RESULT_FILE = "patching.json"
GENERATION_VARIANT = ("cross-patched generation: the donor model generates alongside the receiver, and at every step "
                      "the receiver's chosen neurons take the donor's activations on the same tokens (exact per step)")


@dataclass(frozen=True)
class PatchingConfig:
    """Settings of a patching run."""

    k_grid: tuple[int, ...] = (10, 100)
    """Numbers of top-ranked neurons to patch; capped at the candidate count."""
    n_random: int = 0
    """Matched random sets per k for each direction (0: none; each costs two full measurements)."""
    seed: int = 0
    """Seeds the random sets."""

    def __post_init__(self) -> None:
        if not self.k_grid or any(k < 1 for k in self.k_grid):
            raise ValueError(f"k_grid must hold positive integers, got {self.k_grid}")
        if self.n_random < 0:
            raise ValueError(f"n_random must be >= 0, got {self.n_random}")


def recovered_fraction(patched: dict[str, float], base: dict[str, float], merged: dict[str, float]) -> dict[str, float | None]:
    """``(patched - base) / (merged - base)`` per metric; None where base and merged agree."""
    out: dict[str, float | None] = {}
    for name, value in patched.items():
        gap = merged.get(name, 0.0) - base.get(name, 0.0)
        out[name] = (value - base[name]) / gap if name in base and abs(gap) > 1e-12 else None
    return out


@dataclass(frozen=True)
class PatchPoint:
    """One k: both directions for the flagged set, and the random controls."""

    k: int
    per_layer: dict[int, int]
    sufficiency: dict[str, float]
    """Base model with the neurons patched from merged."""
    necessity: dict[str, float]
    """Merged model with the neurons patched from base."""
    sufficiency_recovered: dict[str, float | None]
    necessity_recovered: dict[str, float | None]
    sufficiency_random: dict[str, Interval]
    necessity_random: dict[str, Interval]

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["sufficiency_random"] = {name: iv.to_dict() for name, iv in self.sufficiency_random.items()}
        out["necessity_random"] = {name: iv.to_dict() for name, iv in self.necessity_random.items()}
        return out


@dataclass(frozen=True)
class PatchingResult:
    config: PatchingConfig
    suite: dict
    base_model: str | None
    merged_model: str | None
    base: dict[str, float]
    merged: dict[str, float]
    points: tuple[PatchPoint, ...]
    generations: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return {
            "kind": "neurodiff.patching/1",
            "config": dataclasses.asdict(self.config),
            "suite": self.suite,
            "generation_variant": GENERATION_VARIANT,
            "base_model": self.base_model,
            "merged_model": self.merged_model,
            "base": self.base,
            "merged": self.merged,
            "points": [point.to_dict() for point in self.points],
        }

    def save(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        return save_with_generations(out_dir, RESULT_FILE, self.to_dict(), self.generations, overwrite=overwrite)


def patching_experiment(
    base: nn.Module,
    merged: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    ranked: Sequence[Neuron],
    suite: EvalSuite,
    config: PatchingConfig = PatchingConfig(),
    *,
    exclude: NeuronSet | None = None,
    names: tuple[str | None, str | None] = (None, None),
) -> PatchingResult:
    """Steps 1-5 of the module docstring. Base and merged must share architecture and tokenizer."""
    widths = layer_widths(base)
    if widths != layer_widths(merged):
        raise ValueError("base and merged models differ in MLP layout; cross-model patching needs the same architecture")
    if not ranked:
        raise ValueError("no candidate neurons to patch; is the neuron table empty or nothing flagged?")
    exclude = exclude if exclude is not None else NeuronSet.from_pairs(ranked)
    records: list[dict] = []

    def run(receiver: nn.Module, donor: nn.Module, neurons: NeuronSet, label: str, k: int, i: int | None) -> dict[str, float]:
        measured = measure(receiver, tokenizer, suite, CrossPatch(donor, neurons))
        records.extend(text_records(label, k, i, suite.prompt_ids, measured.texts))
        return measured.metrics

    clean_base = measure(base, tokenizer, suite, Clean())
    clean_merged = measure(merged, tokenizer, suite, Clean())
    records += text_records("base", 0, None, suite.prompt_ids, clean_base.texts)
    records += text_records("merged", 0, None, suite.prompt_ids, clean_merged.texts)
    points = []
    for k in tqdm(sorted({min(k, len(ranked)) for k in config.k_grid}), desc="patching", leave=False):
        flagged = NeuronSet.from_pairs(ranked[:k])
        sufficiency = run(base, merged, flagged, "sufficiency", k, None)
        necessity = run(merged, base, flagged, "necessity", k, None)
        randoms = flagged.random_matched_sets(widths, config.n_random, _set_seed(config.seed, k), exclude=exclude)
        suff_random = [run(base, merged, s, "sufficiency_random", k, i) for i, s in enumerate(randoms)]
        nec_random = [run(merged, base, s, "necessity_random", k, i) for i, s in enumerate(randoms)]
        points.append(PatchPoint(
            k, flagged.counts(), sufficiency, necessity,
            recovered_fraction(sufficiency, clean_base.metrics, clean_merged.metrics),
            recovered_fraction(necessity, clean_base.metrics, clean_merged.metrics),
            summarise(suff_random), summarise(nec_random),
        ))
    return PatchingResult(config, suite.describe(), names[0], names[1], clean_base.metrics, clean_merged.metrics,
                          tuple(points), tuple(records))
