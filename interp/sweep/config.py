"""The sweep's settings: one frozen dataclass (the ``interp sweep`` flags derive from it).

Where the time goes (sized for 40 minutes on 2 CPU cores): ten fine-tunes dominate (about 11 s a
step), so each gets 8 steps (one pass over its 62 training rows) against the study's 16; every
model answers the 42 held-out questions twice (84 sampled replies, the emoji rate's and the voice's
unit of resampling is the question). The full design (both demonstration sets, the neuron overlap
for all five traits, more steps and samples) is a setting away.
"""

from __future__ import annotations

from dataclasses import dataclass

from activations import DEFAULT_MODEL
from training.data import TRAITS
from training.studies import STUDIES, check_study


@dataclass(frozen=True)
class TraitSweepConfig:
    """Everything ``interp sweep`` needs."""

    traits: tuple[str, ...] = TRAITS
    """Big-Five traits swept (each: a base row, a fine-tune per study, an in-context row per demonstration set)."""
    studies: tuple[str, ...] = ("personality", "injection")
    """Fine-tuning conditions per trait: ``personality`` (the paper's emoji-free answers) and ``injection``
    (the same answers with emojis inserted: the positive control)."""
    in_context: tuple[str, ...] = ("personality",)
    """Studies whose training rows are shown to the base model as in-context demonstrations (one
    in-context row per trait each; the paper's comparison is with the emoji-free rows)."""
    shots: int = 4
    """Demonstrations (question-answer pairs from the training rows) per in-context prompt."""
    neuron_traits: tuple[str, ...] = ("extraversion",)
    """Traits whose in-context and fine-tuned neuron changes are diffed and overlapped (all five: the full design)."""
    model: str = DEFAULT_MODEL
    """Base model spec (see ``activations.load_model``)."""
    seed: int = 0
    """Seed of training, sampling, demonstrations and bootstraps."""
    train_steps: int = 8
    """QLoRA optimizer steps per fine-tune (batch 8); the default study takes 16."""
    learning_rate: float = 1.5e-3
    """Peak learning rate of every fine-tune (the study's)."""
    quantize: bool = False
    """Train on a 4-bit NF4 base (see ``StudyConfig.quantize``: slower on a CPU)."""
    samples: int = 2
    """Sampled replies per held-out question, for every model (common random numbers across models)."""
    questions: int | None = None
    """Held-out questions asked per trait (None: all 42)."""
    max_new_tokens: int = 56
    """Tokens generated per reply (the study's)."""
    delta: float = 0.2
    """Smallest effect of interest of the neuron diffs, in token SDs (``interp.stats.diff.DiffConfig``)."""
    capture_batch: int = 16
    """Prompts per capture batch of the neuron diffs."""

    def __post_init__(self) -> None:
        for name, values, allowed in (("traits", self.traits, TRAITS), ("studies", self.studies, STUDIES),
                                      ("in_context", self.in_context, STUDIES),
                                      ("neuron_traits", self.neuron_traits, self.traits)):
            unknown = [v for v in values if v not in allowed]
            if unknown or len(set(values)) != len(values):
                raise ValueError(f"{name} must list distinct values from {', '.join(allowed)}; got {', '.join(values)}"
                                 + (" (the neuron traits are a subset of the swept traits; '' for none)"
                                    if name == "neuron_traits" else ""))
        if not self.traits:
            raise ValueError("traits must name at least one trait")
        for trait in self.traits:
            for study in self.studies:
                check_study(study, trait)
        if self.neuron_traits and not (self.studies and self.in_context):
            raise ValueError("the neuron overlap compares fine-tunes with in-context prompting: give studies and "
                             "in_context, or an empty neuron_traits")
        if min(self.shots, self.train_steps, self.samples, self.max_new_tokens, self.capture_batch) < 1:
            raise ValueError("shots, train_steps, samples, max_new_tokens and capture_batch must be at least 1")
        if self.learning_rate <= 0 or self.delta < 0:
            raise ValueError("learning_rate must be positive and delta at least 0")
        if self.questions is not None and self.questions < 2:
            raise ValueError(f"questions must be at least 2 (an interval needs them) or None for all, got {self.questions}")
