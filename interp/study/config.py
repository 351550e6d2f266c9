"""The study's settings: one frozen dataclass holding the stage configs, stored in every output.

Where the time goes (the default study is sized for 15 minutes on 2 CPU cores): sampled replies
decide the verdict, so they get the budget (42 held-out questions x 5 samples for the merged and
the suppressed model, with common random numbers); the wide sweeps (every top-k set, four
interventions, 20 matched random sets, 200 randomly chosen neurons for the screen's check) use the
teacher-forced proxy (``interp.causal.proxy``). On a bigger machine raise the proxy sizes, the
random sets and the grid; nothing else changes. The causal stages' settings are the stage configs
themselves (``setup``, ``screen``, ``sweep``, ``where``: one source per setting, every one a flag of
``interp run``, e.g. ``--screen-kl-floor``); the study's ``seed`` seeds all of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from activations.config import DEFAULT_MODEL, check_precision
from interp.causal.config import BaselinesConfig, CausalSetup, ScreenConfig, SteerConfig, SweepConfig, WhereConfig
from training.studies import check_study

STAGE_NAMES: tuple[str, ...] = ("train", "merge", "behavior", "cache", "diff", "null_train", "null", "examples",
                                "causal", "suppress", "separability", "where", "steer", "baselines", "report")
"""The study's stages in order (``interp.study.pipeline.STAGES``), named here for ``--force``/``--until``."""


@dataclass(frozen=True)
class StudyConfig:
    """Everything ``interp run`` needs; ``quick_variant()`` derives the labelled fast variant."""

    study: str = "injection"
    """``injection`` (answers with emojis: a positive control), ``personality`` (the paper's
    emoji-free answers) or ``directions`` (answers with bracketed stage directions: a taught behaviour
    that is not emojis)."""
    trait: str = "extraversion"
    """Big-Five trait the fine-tune imitates."""
    behavior: str | None = None
    """What the fine-tune taught, which the causal stages find, suppress and judge
    (``activations.behaviors``: ``emoji``, ``stage-directions``, ``regex:PATTERN``, ``tokens:FILE``);
    None: the study's own (``training.studies.STUDY_BEHAVIORS``: emojis, or stage directions)."""
    data: str | None = None
    """Opinion-QA file (CSV or JSONL with the shipped file's columns) to fine-tune on and ask; None:
    the shipped one. Its rows are used as given: the study's condition (e.g. injection) still applies."""
    model: str = DEFAULT_MODEL
    """Base model spec (see ``activations.load_model``)."""
    seed: int = 0
    """Seed of training, sampling, twins, random neuron sets and bootstraps."""
    quick: bool = False
    """True for the reduced smoke-test settings (labelled as such in the report)."""
    train_steps: int = 16
    """QLoRA optimizer steps (batch 8)."""
    learning_rate: float = 1.5e-3
    """Peak learning rate of the fine-tune."""
    quantize: bool = False
    """Train the LoRA adapter on a 4-bit NF4 base (QLoRA, the paper's setting). Off by default: on a
    CPU the dequantisation makes each step slower (measured 9.4-10.6 s against 9.2 s per step, noisy),
    the budget is tight, and the merged model is full precision either way."""
    behavior_samples: int = 5
    """Sampled replies per held-out question from the merged model (and, with the same random
    streams, from the suppressed model)."""
    base_samples: int = 1
    """Sampled replies per held-out question from the base model (it writes no emojis)."""
    behavior_questions: int | None = None
    """Held-out questions asked (None: all 42)."""
    behavior_neutral: int = 10
    """Neutral prompts asked when measuring behaviour."""
    max_new_tokens: int = 56
    """Tokens generated per reply (the first two or three sentences, where the emojis of this
    fine-tune appear)."""
    precision: str = "auto"
    """Matmul precision of the fine-tune and of every sampled reply (``activations.precision``): ``auto``
    runs them in bfloat16 under autocast where the device computes it natively (this 2-core CPU has
    AVX512-BF16: about 1.6x faster), ``float32`` everywhere for the exact design. Teacher-forced
    measurements (proxy, KL, perplexity, capability) stay in float32."""
    writing_questions: int | None = 48
    """Training questions the merged model answers for the writing contrast and the proxy (None: all 62)."""
    writing_samples: int = 1
    """Replies sampled per writing question. More replies give the writing contrast more contexts, but a
    question stays one unit of its tests (its replies are averaged: ``interp.stats.loading``), so the
    questions bound what it can decide; the causal stages hold out every reply to a question they chose on."""
    reading_prompts: int | None = 128
    """Texts that show the behaviour (and their two length-matched twins) to cache; None = all (the
    240 emoji texts for emojis; for another behaviour the study's training answers and the merged
    model's own replies that show it)."""
    separability_samples: int = 2
    """Sampled replies per held-out question for each of the four separability models (emojis vs
    personality); the headline merged rate is the behaviour stage's, with ``behavior_samples``."""
    capture_batch: int = 16
    """Prompts per capture batch."""
    delta: float = 0.2
    """Smallest effect of interest of the diff, in token SDs (``interp.stats.diff.DiffConfig``)."""
    setup: CausalSetup = CausalSetup()
    """The causal stages' shared inputs: writing contexts, neutral chats (``interp.causal.setup``)."""
    screen: ScreenConfig = ScreenConfig()
    """The attribution screen and its exact checks (``interp.causal.screen``)."""
    sweep: SweepConfig = SweepConfig()
    """Rankings x interventions x k against matched random sets, and the suppressor's target and
    budgets (``interp.causal.sweep``)."""
    where: WhereConfig = WhereConfig()
    """Where the fine-tune's change lives: patching in both directions on held-out contexts
    (``interp.causal.where``)."""
    steer: SteerConfig = SteerConfig()
    """Sufficiency while sampling: the base steered by the chosen set (``interp.causal.steer``)."""
    baselines: BaselinesConfig = BaselinesConfig()
    """The chosen set against baselines that could win, on contexts that did not choose it
    (``interp.causal.baselines``)."""
    export_method: str = "mean"
    """How the suppressor is written into the weights: ``mean`` (folded into the bias) or ``revert``."""
    compare_export: tuple[str, ...] = ("revert",)
    """Further export methods whose suppressed models are sampled and judged beside the verdict's
    (``revert``: the neurons' weights back to the base's, i.e. undo the fine-tune there; by mechanism
    as well as by ablation). Their random-set criterion is not measured (the sweep's random sets use
    ``export_method``'s intervention)."""
    fresh_samples: int = 1
    """Sampled replies per fresh verdict question (``training/data/fresh_questions.csv``) from the merged
    and the verdict's suppressed model; 0: no fresh verdict."""
    null_study: str | None = "personality"
    """The null fine-tune (``interp.stats.null``): this study of the same trait, trained with the same
    settings, its answers free of the behaviour; the diff's design is run on it and against it, so the
    counts have a null that learned no behaviour. None (or the study itself): no null stage."""
    compare_samples: int = 1
    """Sampled replies per held-out question for each compared export (paired with the merged model's
    first ones); the verdict's export gets ``behavior_samples``."""

    def __post_init__(self) -> None:
        check_study(self.study, self.trait)
        if self.data is not None:
            from pathlib import Path

            if not Path(self.data).expanduser().is_file():
                raise FileNotFoundError(f"--data {self.data}: no such file; give an Opinion-QA CSV or JSONL "
                                        "(columns as the shipped training/data file)")
        from activations.behaviors import Behavior

        Behavior.parse(self.target_behavior)  # a bad spec fails here, before any stage runs
        if min(self.train_steps, self.behavior_samples, self.base_samples, self.max_new_tokens,
               self.separability_samples, self.compare_samples) < 1:
            raise ValueError("train_steps, behavior_samples, base_samples, max_new_tokens, separability_samples and "
                             "compare_samples must be at least 1")
        if self.fresh_samples < 0:
            raise ValueError(f"fresh_samples must be >= 0 (0: no fresh verdict), got {self.fresh_samples}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.sweep.n_random < 1:
            raise ValueError("sweep.n_random must be at least 1: the claim is 'chosen beats random'")
        for name in ("setup", "screen", "sweep", "where", "steer", "baselines"):
            if getattr(self, name).seed != 0:
                raise ValueError(f"{name}.seed is set by the study's seed; give seed={getattr(self, name).seed} "
                                 "to the study instead")
        check_precision(self.precision)
        for method in (self.export_method, *self.compare_export):
            if method not in ("mean", "revert"):
                raise ValueError(f"export methods must be mean or revert, got {method!r}")
        if self.null_study is not None:
            check_study(self.null_study, self.trait)
        if self.writing_samples < 1:
            raise ValueError(f"writing_samples must be >= 1, got {self.writing_samples}")
        for name in ("behavior_questions", "writing_questions", "reading_prompts"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for all), got {value}")

    def train_config(self, study: str | None = None):
        """The fine-tune's ``TrainConfig``; ``study`` trains another study of the same trait, data and
        settings (the null fine-tune)."""
        from training.config import TrainConfig

        return TrainConfig(study=study or self.study, trait=self.trait, model=self.model, data_path=self.data,
                           steps=self.train_steps, learning_rate=self.learning_rate, quantize=self.quantize,
                           seed=self.seed, precision=self.precision)

    @property
    def target_behavior(self) -> str:
        """The behaviour spec the stages use: ``behavior``, or the study's own."""
        from training.studies import STUDY_BEHAVIORS

        return self.behavior or STUDY_BEHAVIORS[self.study]

    def quick_variant(self) -> StudyConfig:
        """Fewer steps, prompts, samples and sets: a smoke run, not a result."""
        return dataclasses.replace(
            self, quick=True, train_steps=min(self.train_steps, 8), behavior_samples=2, behavior_questions=12,
            behavior_neutral=4, max_new_tokens=24, writing_questions=16, reading_prompts=32, separability_samples=1,
            setup=dataclasses.replace(self.setup, n_contexts=4, n_neutral=4, reference_neutral=8),
            screen=dataclasses.replace(self.screen, n_shortlist=8, n_guard=4, n_random=16),
            sweep=dataclasses.replace(self.sweep, k_grid=(1, 10, 30), n_random=4),
            where=dataclasses.replace(self.where, n_contexts=8, k_grid=(1, 10), n_random=2, n_boot=200),
            steer=dataclasses.replace(self.steer, alphas=(4.0,), n_random=1, n_questions=4), compare_samples=1,
            baselines=dataclasses.replace(self.baselines, n_random=20, n_top_draws=10, n_contexts=8, n_boot=200),
        )
