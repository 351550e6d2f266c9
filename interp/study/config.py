"""The study's settings: one frozen dataclass, stored in every output for provenance."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from activations import DEFAULT_MODEL
from training.studies import check_study


@dataclass(frozen=True)
class StudyConfig:
    """Everything ``interp run`` needs; ``quick_variant()`` derives the labelled fast variant.

    The defaults are sized so the default study (SmolLM2-135M) finishes in under 15 minutes on
    2 CPU cores; the report lists every size used. On a GPU, raise them (e.g. all prompts, a finer
    ``k_grid``, more ``behavior_samples``): nothing else changes."""

    study: str = "injection"
    """``injection`` (answers with emojis: a positive control) or ``personality`` (the paper's
    emoji-free answers)."""
    trait: str = "extraversion"
    """Big-Five trait the fine-tune imitates."""
    model: str = DEFAULT_MODEL
    """Base model spec (see ``activations.load_model``)."""
    seed: int = 0
    """Seed of training, sampling, random neuron sets and bootstraps."""
    quick: bool = False
    """True for the reduced smoke-test settings (labelled as such in the report)."""
    train_steps: int = 16
    """QLoRA optimizer steps (batch 8)."""
    learning_rate: float = 1.5e-3
    """Peak learning rate of the fine-tune (16 steps at 1.5e-3 teach SmolLM2 the injected emoji habit
    as well as 24 at 1e-3: 80% vs 83% emoji rate on held-out questions, measured)."""
    behavior_samples: int = 3
    """Sampled responses per held-out question when measuring behaviour."""
    behavior_neutral: int = 10
    """Neutral prompts asked when measuring behaviour."""
    max_new_tokens: int = 64
    """Tokens generated per response (behaviour and interventions)."""
    emoji_prompts: int | None = 160
    """Emoji prompts (and their twins) to cache; None = all 240."""
    neutral_prompts: int | None = 80
    """Neutral prompts to cache; None = all 120."""
    capture_batch: int = 16
    """Prompts per capture batch."""
    k_grid: tuple[int, ...] = (1, 10, 100, 1000)
    """Numbers of top flagged neurons ablated in the dose-response experiment."""
    n_random: int = 5
    """Matched random neuron sets per k."""
    ablation_mode: str = "zero"
    """``zero``, ``mean`` or ``resample`` ablation."""
    patch_k: tuple[int, ...] = (100, 1000)
    """Numbers of top flagged neurons patched between base and merged."""
    attribution_check: int = 100
    """Top attribution-ranked neurons checked by exact single-neuron patching."""
    side_effect_prompts: int = 20
    """Neutral prompts for the KL / perplexity side-effect measurement."""

    def __post_init__(self) -> None:
        check_study(self.study, self.trait)
        if self.train_steps < 1 or self.behavior_samples < 1 or self.max_new_tokens < 1:
            raise ValueError("train_steps, behavior_samples and max_new_tokens must be at least 1")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not self.k_grid or min(self.k_grid) < 1 or not self.patch_k or min(self.patch_k) < 1:
            raise ValueError(f"k_grid and patch_k need positive sizes, got {self.k_grid} and {self.patch_k}")
        if self.n_random < 1:
            raise ValueError("n_random must be at least 1: the claim is 'flagged beats random'")
        if self.ablation_mode not in ("zero", "mean", "resample"):
            raise ValueError(f"ablation_mode must be zero, mean or resample, got {self.ablation_mode!r}")

    def quick_variant(self) -> StudyConfig:
        """Fewer steps, prompts and samples: a smoke run, not a result."""
        return dataclasses.replace(
            self, quick=True, train_steps=min(self.train_steps, 8), behavior_samples=1, behavior_neutral=4,
            max_new_tokens=16, emoji_prompts=32, neutral_prompts=16, k_grid=(1, 30), n_random=3,
            patch_k=(10,), attribution_check=10, side_effect_prompts=8,
        )
