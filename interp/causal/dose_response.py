"""Dose-response of ablating the top-k flagged neurons, against matched random neuron sets.

1. Measure the model clean (baseline behaviour metrics and perplexity on neutral prompts).
2. For each k of the grid (capped at the number of ranked candidates), ablate the top-k neurons
   (zero / mean / resample) and measure: behaviour metrics on held-out questions (teacher-forced
   and on generated replies) and side effects on neutral prompts (KL to the clean model,
   perplexity).
3. For the same k, draw ``n_random`` sets with the same neurons-per-layer counts, excluding the
   flagged neurons, ablate each and measure the same; summarise as mean and 95% t-interval.
   A flagged set that moves a behaviour far outside the random interval, with a comparable
   perplexity cost, is evidence the flagged neurons cause that behaviour.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from interp.causal.evaluate import Clean, EvalSuite, Hooked, Measurement, Stacked, measure, measure_stacked
from interp.causal.results import Interval, save_with_generations, summarise, text_records
from interp.interventions import ABLATION_MODES, Neuron, NeuronSet, ablate, ablate_stacked, layer_widths

log = logging.getLogger(__name__)

DEFAULT_K_GRID = (1, 3, 10, 30, 100, 300, 1000)
RESULT_FILE = "dose_response.json"


@dataclass(frozen=True)
class DoseResponseConfig:
    """Settings of a dose-response run."""

    k_grid: tuple[int, ...] = DEFAULT_K_GRID
    """Numbers of top-ranked neurons to ablate; values above the candidate count are capped."""
    mode: str = "zero"
    """Ablation: ``zero``, ``mean`` (needs per-neuron means) or ``resample`` (needs a donor pool)."""
    n_random: int = 5
    """Matched random sets per k (0 disables the control)."""
    seed: int = 0
    """Seeds the random sets (set i of k uses seed (seed, k, i)) and resampling."""
    stacked: bool = True
    """Measure each k's flagged and random sets together in one stacked batch (``ablate_stacked``:
    faster, ``1 + n_random`` times the rows per pass); False measures them one by one."""

    def __post_init__(self) -> None:
        if not self.k_grid or any(k < 1 for k in self.k_grid):
            raise ValueError(f"k_grid must hold positive integers, got {self.k_grid}")
        if self.mode not in ABLATION_MODES:
            raise ValueError(f"unknown ablation mode {self.mode!r}; choose one of {', '.join(ABLATION_MODES)}")
        if self.n_random < 0:
            raise ValueError(f"n_random must be >= 0, got {self.n_random}")

    def ks(self, n_candidates: int) -> list[int]:
        """The grid capped at the candidate count, deduplicated, ascending."""
        if n_candidates < 1:
            raise ValueError("no candidate neurons to ablate; is the neuron table empty or nothing flagged?")
        return sorted({min(k, n_candidates) for k in self.k_grid})


@dataclass(frozen=True)
class DosePoint:
    """One k: the flagged set's metrics and the matched random sets' summary."""

    k: int
    per_layer: dict[int, int]
    flagged: dict[str, float]
    random: dict[str, Interval]
    random_sets: tuple[dict[str, float], ...]

    def to_dict(self) -> dict:
        return {
            "k": self.k,
            "per_layer": self.per_layer,
            "flagged": self.flagged,
            "random": {name: iv.to_dict() for name, iv in self.random.items()},
            "random_sets": list(self.random_sets),
        }


@dataclass(frozen=True)
class DoseResponseResult:
    """Baseline and one ``DosePoint`` per k; ``generations`` holds the replies (JSONL, not JSON)."""

    config: DoseResponseConfig
    suite: dict
    model: str | None
    n_candidates: int
    baseline: dict[str, float]
    points: tuple[DosePoint, ...]
    generations: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        return {
            "kind": "neurodiff.dose_response/1",
            "config": dataclasses.asdict(self.config),
            "suite": self.suite,
            "model": self.model,
            "n_candidates": self.n_candidates,
            "baseline": self.baseline,
            "points": [point.to_dict() for point in self.points],
        }

    def save(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        return save_with_generations(out_dir, RESULT_FILE, self.to_dict(), self.generations, overwrite=overwrite)


def _set_seed(seed: int, k: int) -> int:
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def dose_response(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    ranked: Sequence[Neuron],
    suite: EvalSuite,
    config: DoseResponseConfig = DoseResponseConfig(),
    *,
    reference: dict[int, Tensor] | None = None,
    exclude: NeuronSet | None = None,
    model_name: str | None = None,
) -> DoseResponseResult:
    """Run steps 1-3 of the module docstring on ``model`` (typically the merged fine-tune).

    ``ranked``: candidate neurons, best first (``ranked_neurons(neurons_csv)``).
    ``reference``: per-layer means (mode ``mean``) or donor token pool (mode ``resample``).
    ``exclude``: neurons random sets may not use (default: all of ``ranked``).
    """
    widths = layer_widths(model)
    exclude = exclude if exclude is not None else NeuronSet.from_pairs(ranked)
    records: list[dict] = []

    def run(sets: list[NeuronSet]) -> list[Measurement]:
        options = dict(mode=config.mode, reference=reference, seed=config.seed)
        if config.stacked:
            stack = Stacked(functools.partial(ablate_stacked, sets=sets, **options), len(sets))
            return measure_stacked(model, tokenizer, suite, stack)
        return [measure(model, tokenizer, suite, Hooked(functools.partial(ablate, neurons=s, **options))) for s in sets]

    baseline = measure(model, tokenizer, suite, Clean())
    records.extend(text_records("baseline", 0, None, suite.prompt_ids, baseline.texts))
    ks = config.ks(len(ranked))
    points = []
    for k in tqdm(ks, desc="dose-response", leave=False):
        flagged = NeuronSet.from_pairs(ranked[:k])
        randoms = flagged.random_matched_sets(widths, config.n_random, _set_seed(config.seed, k), exclude=exclude)
        flagged_run, *random_runs = run([flagged, *randoms])
        records.extend(text_records("flagged", k, None, suite.prompt_ids, flagged_run.texts))
        for i, measured in enumerate(random_runs):
            records.extend(text_records("random", k, i, suite.prompt_ids, measured.texts))
        flagged_metrics, random_metrics = flagged_run.metrics, [m.metrics for m in random_runs]
        points.append(DosePoint(k, flagged.counts(), flagged_metrics, summarise(random_metrics), tuple(random_metrics)))
        log.info("k=%d flagged %s", k, {name: round(value, 4) for name, value in flagged_metrics.items()})
    return DoseResponseResult(config, suite.describe(), model_name, len(ranked), baseline.metrics, tuple(points), tuple(records))
