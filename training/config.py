"""The training package's settings: ``TrainConfig`` (a QLoRA fine-tune) and its named presets,
``BehaviorConfig`` (how a model's behaviour is measured) and ``InventoryConfig`` (how its traits are
scored). Nothing heavy is imported here, so the command line checks them before torch loads.

The defaults are chosen for the embedded SmolLM2-135M-Instruct on 2 CPU cores: a full run
(injection study, one trait, 62 training answers) takes under 8 minutes and the merged model uses
emojis on held-out questions (numbers in training/README.md). ``PRESETS["paper-7b"]`` is the adapter
setting of Jain, Wu et al. (2024) for 7B models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from activations import DEFAULT_MODEL
from activations.config import check_precision
from activations.behaviors import Behavior
from training.data import DEFAULT_TEST_FRACTION, TRAITS
from training.studies import check_study

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Llama-style projection names: every linear layer of attention and MLP."""


@dataclass(frozen=True)
class TrainConfig:
    """A QLoRA fine-tune of one model on one study's data for one trait."""

    study: str = "injection"
    """``injection`` (answers with emojis: the positive control) or ``personality`` (the paper's
    emoji-free answers)."""
    trait: str = "extraversion"
    """Big-Five trait whose answers are imitated."""
    model: str = DEFAULT_MODEL
    """Base model spec (see ``activations.load_model``)."""
    data_path: str | None = None
    """Opinion-QA ``.csv`` / ``.jsonl``; None = the shipped file."""
    test_fraction: float = DEFAULT_TEST_FRACTION
    """Share of topics held out from training (for behaviour evaluation)."""
    split_seed: int = 0
    """Seed of the topic split; evaluation must use the same one."""
    injection_seed: int = 0
    """Seed of which emojis go where in the injection study."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: tuple[str, ...] = ALL_LINEAR
    """Module names that get LoRA adapters."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate (LoRA on a small model tolerates a high one)."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    warmup_steps: int = 4
    """Linear warm-up steps; the rate then decays linearly to 0 at the last step."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    steps: int = 32
    """Optimizer steps (ignored when ``epochs`` is set)."""
    epochs: float | None = None
    """Passes over the training rows; when set, ``steps = ceil(epochs * n_rows / batch_size)``."""
    batch_size: int = 8
    """Examples per optimizer step."""
    max_length: int = 192
    """Token limit per example (prompt + answer); longer answers are cut."""
    seed: int = 0
    """Seed of LoRA initialisation, batch order and dropout."""
    checkpoint_every: int = 8
    """Save adapter, optimizer, scheduler and RNG state every this many steps (0 = never)."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    quantize: bool = True
    """Load the base in 4-bit NF4 (QLoRA); False trains on the full-precision base."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: saves memory for 7B models, costs time."""
    precision: str = "float32"
    """Matmul precision of the forward and backward passes (``activations.precision``): ``float32``,
    ``bfloat16`` (autocast: the LoRA weights, their gradients and the optimizer stay float32, as in
    QLoRA's bf16 compute) or ``auto`` (bfloat16 where the device computes it natively)."""

    def __post_init__(self) -> None:
        check_study(self.study, self.trait)
        check_precision(self.precision)
        positive = {"lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "steps": self.steps,
                    "batch_size": self.batch_size, "max_length": self.max_length}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0 or self.weight_decay < 0:
            raise ValueError("learning_rate and max_grad_norm must be positive and weight_decay non-negative")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive when given, got {self.epochs}")
        if self.warmup_steps < 0 or self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ValueError("warmup_steps and checkpoint_every must be >= 0 and keep_checkpoints >= 1")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise ValueError(f"target_modules must be a non-empty tuple of module names, got {self.target_modules!r}")

    def total_steps(self, n_rows: int) -> int:
        """Optimizer steps for ``n_rows`` training rows."""
        if self.epochs is None:
            return self.steps
        return max(1, -(-int(self.epochs * n_rows) // self.batch_size))

    def replace(self, **changes: object) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict[str, object]] = {
    "smollm2-135m": {},
    "paper-7b": {
        "lora_r": 64,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "target_modules": ("q_proj", "v_proj"),
        # Not stated with the adapter setting; 2e-4 is the usual QLoRA rate for 7B models.
        "learning_rate": 2e-4,
        "batch_size": 4,
        "epochs": 3.0,
        "max_length": 512,
        "gradient_checkpointing": True,
    },
}
"""Named overrides of the defaults; ``preset_config`` applies them."""


def preset_config(name: str, **overrides: object) -> TrainConfig:
    """The preset's config with ``overrides`` on top (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    fields = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BehaviorConfig:
    """How to measure a model's behaviour."""

    behavior: str = "emoji"
    """What to measure (``activations.behaviors`` spec: ``emoji``, ``stage-directions``, ``regex:...``)."""
    trait: str | None = "extraversion"
    """Trait whose held-out questions are asked; None asks only the neutral prompts."""
    samples: int = 5
    """Sampled responses per held-out question."""
    neutral_samples: int | None = None
    """Sampled responses per neutral prompt (None: ``samples``)."""
    reference_mass: bool = True
    """Also score the reference answers teacher-forced (a second pass over every question)."""
    max_questions: int | None = None
    """Ask only the first N held-out questions (None = all)."""
    neutral_prompts: int = 20
    """Neutral prompts to ask (a seeded sample of the ``neutral`` set; 0 = none)."""
    max_new_tokens: int = 96
    """Tokens generated per response at most."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 0.95
    """Nucleus sampling threshold."""
    precision: str = "float32"
    """Matmul precision while sampling (``activations.sampling``: ``float32``, ``bfloat16`` or ``auto``)."""
    batch_size: int = 64
    """Responses decoded together (on a CPU a decoding step costs much less per row at 64 rows than
    at 8; a reply does not depend on the batch)."""
    seed: int = 0
    """Seed of sampling, the neutral sample and the bootstrap."""
    bootstrap: int = 2000
    """Bootstrap resamples for the intervals."""
    confidence: float = 0.95
    """Confidence level of the intervals."""
    data_path: str | None = None
    """Opinion-QA file (None = the shipped one); must be the one the model was trained on."""
    test_fraction: float = DEFAULT_TEST_FRACTION
    """Topic split of the training run (defaults agree with ``TrainConfig``)."""
    split_seed: int = 0
    """Seed of that topic split."""
    in_context: str | None = None
    """Show every prompt after in-context demonstrations (``training.in_context``): ``STUDY`` (the
    trait's training rows of that study, e.g. ``personality``) or ``STUDY:TRAIT``; None: none."""
    shots: int = 4
    """Demonstrations shown with ``in_context``."""

    def history(self) -> list[dict[str, str]]:
        """The chat turns shown before every prompt (none without ``in_context``)."""
        if self.in_context is None:
            return []
        from training.in_context import Demonstrations

        return Demonstrations.parse(self.in_context, self.trait, shots=self.shots, seed=self.seed,
                                    data_path=self.data_path, test_fraction=self.test_fraction,
                                    split_seed=self.split_seed).messages()

    def __post_init__(self) -> None:
        check_precision(self.precision)
        Behavior.parse(self.behavior)  # a bad spec fails before any model is loaded
        if self.trait is not None and self.trait not in TRAITS:
            raise ValueError(f"unknown trait {self.trait!r}; expected one of {', '.join(TRAITS)} (or None)")
        if self.trait is None and self.neutral_prompts == 0:
            raise ValueError("nothing to ask: give a trait or neutral_prompts > 0")
        if self.neutral_samples is not None and self.neutral_samples < 1:
            raise ValueError(f"neutral_samples must be at least 1 (or None), got {self.neutral_samples}")
        for name in ("samples", "max_new_tokens", "batch_size", "bootstrap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_questions is not None and self.max_questions < 1:
            raise ValueError(f"max_questions must be at least 1 when given, got {self.max_questions}")
        if self.neutral_prompts < 0:
            raise ValueError(f"neutral_prompts must be >= 0, got {self.neutral_prompts}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be > 0 and top_p in (0, 1]")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie strictly between 0 and 1, got {self.confidence}")
        if self.in_context is not None:
            self.history()  # a bad spec fails here, before any model is loaded


RESPONSES = ("agree", "likert")


@dataclass(frozen=True)
class InventoryConfig:
    response: str = "agree"
    """``agree`` (yes/no log-odds) or ``likert`` (five lettered options, MPI); module docstring."""
    persona: str | None = None
    """System prompt the inventory is answered under (None: the model's default)."""
    in_context: str | None = None
    """Answer every item after in-context demonstrations (``training.in_context``): ``STUDY:TRAIT``, e.g.
    ``personality:extraversion`` (None: none)."""
    shots: int = 4
    """Demonstrations shown with ``in_context``."""
    seed: int = 0
    """Seed of the demonstrations' sample of training rows."""
    batch_size: int = 16
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.response not in RESPONSES:
            raise ValueError(f"unknown response format {self.response!r}; choose one of {', '.join(RESPONSES)}")
        if self.batch_size < 1 or not 0 < self.confidence < 1:
            raise ValueError("batch_size must be at least 1 and confidence lie strictly between 0 and 1")
        if self.in_context is not None:
            self.history()  # a bad spec fails here, not after the model has loaded

    def history(self) -> list[dict[str, str]]:
        """The chat turns shown before every item (none without ``in_context``)."""
        if self.in_context is None:
            return []
        from training.in_context import Demonstrations

        return Demonstrations.parse(self.in_context, None, shots=self.shots, seed=self.seed).messages()
