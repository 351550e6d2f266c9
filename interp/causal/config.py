"""The causal stages' settings: shared inputs (``CausalSetup``), the screen and the sweep.

Frozen dataclasses with their validation and nothing heavy imported, so ``interp attribute --help``
and a bad flag are answered before torch loads; the stages that use them live beside this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from activations.config import check_precision

INTERVENTIONS: tuple[str, ...] = ("mean", "zero", "resample", "patch")
"""The sweep's interventions: mean, zero and resample ablation, and base-value patching."""


@dataclass(frozen=True)
class CausalSetup:
    """Sizes of the causal stages' shared inputs."""

    n_contexts: int = 8
    """Writing contexts (merged replies cut where they start the behaviour) every condition is scored on."""
    n_neutral: int = 8
    """Templated neutral chats for the KL / perplexity of every condition."""
    reference_neutral: int = 32
    """Neutral chats whose content tokens give the means, mean squares and donor pool."""
    verdict_neutral: int = 40
    """Neutral chats, none of them used before, on which the exported suppressor's side effects are measured."""
    batch_size: int = 8
    """Rows per forward pass."""
    seed: int = 0
    """Seeds the donor pool."""

    def __post_init__(self) -> None:
        if min(self.n_contexts, self.n_neutral, self.reference_neutral, self.verdict_neutral, self.batch_size) < 1:
            raise ValueError("every causal setup size must be at least 1")


@dataclass(frozen=True)
class ScreenConfig:
    """Sizes and thresholds of the screen."""

    n_shortlist: int = 24
    """Neurons with the most negative mean-ablation estimate verified exactly (behaviour effect and KL)."""
    n_guard: int = 8
    """Further neurons taken by the largest sum of |per-position contributions| (cancellation guard)."""
    n_random: int = 200
    """Randomly sampled neurons patched exactly, to check the screen for false negatives."""
    check_contexts: int = 2
    """Writing contexts of that check (attribution is recomputed on the same ones): it tests the
    first-order approximation, which needs the same inputs on both sides, not many of them."""
    kl_floor: float = 1e-4
    """Added to a neuron's KL in the selectivity ratio (nats per token), so near-zero KLs do not explode it."""
    load_bearing_kl: float = 0.01
    """A neuron whose mean ablation alone costs more neutral KL than this is load-bearing."""
    n_top_check: int = 24
    """Top neurons of each estimator (``change``, ``ablation``) verified exactly on the check contexts,
    for its recall@k and Spearman where it chooses (``interp.causal.estimators``); 0: skip."""
    recall_k: tuple[int, ...] = (5, 10, 20)
    """k values of that recall."""
    max_copies: int = 8
    """Neurons verified side by side in one stacked pass."""
    seed: int = 0
    """Seed of the random sample."""

    def __post_init__(self) -> None:
        if self.n_shortlist < 1 or self.n_random < 0 or self.n_guard < 0 or self.check_contexts < 1:
            raise ValueError("n_shortlist and check_contexts must be >= 1, n_random and n_guard >= 0")
        if self.n_top_check < 0 or not self.recall_k or min(self.recall_k) < 1:
            raise ValueError("n_top_check must be >= 0 and recall_k needs positive sizes")
        if self.kl_floor <= 0 or self.load_bearing_kl <= 0:
            raise ValueError("kl_floor and load_bearing_kl must be > 0")


@dataclass(frozen=True)
class SweepConfig:
    """What the sweep measures and what the suppressor must achieve (proxy units)."""

    k_grid: tuple[int, ...] = (1, 3, 10, 30, 100, 300)
    """Top-k sizes of every ranking."""
    interventions: tuple[str, ...] = INTERVENTIONS
    """Interventions shown side by side for the primary ranking (others get only ``suppress_with``)."""
    side_by_side_k: tuple[int, ...] = (3, 10, 30)
    """k values at which the other interventions are measured (the suppressor's runs the whole grid)."""
    suppress_with: str = "mean"
    """The suppressor's intervention (``mean`` folds into the output bias of an exported model)."""
    n_random: int = 20
    """Matched random sets per controlled k."""
    random_k: tuple[int, ...] = ()
    """Further k values of the primary ranking that get a random cloud (the chosen k always does)."""
    control_all_rankings: bool = False
    """Also draw a random cloud matched to every other ranking's top set at the chosen k."""
    target_reduction: float = 0.75
    """Share of the target mass the suppressor must remove at the writing positions. Deliberately past
    the verdict's 50% cut of the *sampled* rate: on the emoji study the proxy and the sampled rate
    differed by about ten points either way (measured 56% proxy -> 49% sampled, 77% -> 82%), so a
    suppressor sized to a 50% proxy reduction passes or fails the verdict by chance. The verdict's
    criterion does not move."""
    kl_budget: float = 0.05
    """Largest mean next-token KL on neutral chats (nats per token) the suppressor may cost."""
    ppl_budget: float = 0.10
    """Largest relative increase of neutral perplexity the suppressor may cost."""
    bisect: bool = True
    """Narrow the chosen k between grid points."""
    max_copies: int = 8
    """Sets measured side by side in one stacked pass."""
    seed: int = 0
    """Seeds the random sets."""

    def __post_init__(self) -> None:
        if not self.k_grid or min(self.k_grid) < 1:
            raise ValueError(f"k_grid needs positive sizes, got {self.k_grid}")
        unknown = [i for i in (*self.interventions, self.suppress_with) if i not in INTERVENTIONS]
        if unknown:
            raise ValueError(f"unknown interventions {unknown}; choose from {', '.join(INTERVENTIONS)}")
        if self.n_random < 0 or not 0 < self.target_reduction <= 1 or self.kl_budget <= 0 or self.ppl_budget <= 0:
            raise ValueError("need n_random >= 0, 0 < target_reduction <= 1, kl_budget > 0 and ppl_budget > 0")


@dataclass(frozen=True)
class WhereConfig:
    """What ``interp.causal.where`` patches, in both directions, and on how many contexts."""

    n_contexts: int | None = 24
    """Held-out writing contexts (those the sweep did not choose on) scored; None: all of them."""
    k_grid: tuple[int, ...] = (1, 3, 10, 30, 100)
    """Top-k sizes of every ranking."""
    layer_profile: bool = True
    """Also patch every neuron of one layer at a time."""
    n_random: int = 10
    """Matched random sets of the chosen set's size."""
    leave_one_out: bool = True
    """Noise the chosen set without each of its neurons in turn."""
    classes: tuple[str, ...] = ("activated", "amplified")
    """The diff's neuron classes patched as sets (the paper's two)."""
    class_random: int = 4
    """Matched random sets per class."""
    max_copies: int = 8
    """Sets patched side by side in one stacked pass."""
    n_boot: int = 2000
    """Bootstrap resamples of the contexts."""
    confidence: float = 0.95
    seed: int = 0
    """Seeds the random sets and the bootstrap."""
    precision: str = "auto"
    """Matmul precision of every pass here, the clean ones included (``activations.precision``): ``auto``
    runs bf16 where the hardware computes it natively. The shares are ratios of target probabilities
    a fine-tune moved by a large amount, so bf16's rounding shows in the third digit (against float32
    on the default study: ``bench/bench_where_precision.py``) at half the time; the screen, which
    compares tiny single-neuron effects and KLs, stays in float32."""

    def __post_init__(self) -> None:
        if (self.n_contexts is not None and self.n_contexts < 2) or not self.k_grid or min(self.k_grid) < 1:
            raise ValueError("n_contexts must be >= 2 (or None) and k_grid needs positive sizes")
        check_precision(self.precision)
        if self.n_random < 0 or self.class_random < 0 or self.n_boot < 100 or not 0 < self.confidence < 1:
            raise ValueError("need n_random >= 0, n_boot >= 100 and 0 < confidence < 1")


@dataclass(frozen=True)
class SteerConfig:
    """How ``interp.causal.steer`` steers the base while it samples."""

    alphas: tuple[float, ...] = (1.0, 16.0)
    """Multiples of the mean change (dose response); the unsteered base is always sampled too. Every
    alpha adds one condition per random set, the chosen set and the direction: (1, 4, 16) took the
    default study's steer stage 83 s."""
    n_random: int = 2
    """Matched random sets steered the same way at every alpha."""
    n_questions: int | None = 16
    """Held-out questions the steered base answers (None: all of them)."""
    samples: int = 1
    """Replies per question and condition."""
    seed: int = 0
    """Seeds the random sets (the replies use the behaviour stage's sampler seed)."""

    def __post_init__(self) -> None:
        if not self.alphas or min(self.alphas) <= 0:
            raise ValueError(f"alphas must be positive multiples of the mean change, got {self.alphas}")
        if self.n_random < 0 or self.samples < 1 or (self.n_questions is not None and self.n_questions < 1):
            raise ValueError("need n_random >= 0, samples >= 1 and n_questions >= 1 (or None)")


@dataclass(frozen=True)
class BaselinesConfig:
    """What ``interp.causal.baselines`` pits the chosen set against."""

    n_random: int = 200
    """Matched random sets from the unfiltered pool. Every set costs an exact pass over the contexts:
    0.14 s each in bf16 (0.37 s in float32) on the default study's 12 held-out contexts
    (``bench/bench_baselines_precision.py``)."""
    top_pool: int = 50
    """The screen's strongest estimates that ``n_top_draws`` random k-subsets are drawn from."""
    n_top_draws: int = 8
    n_contexts: int | None = 24
    """Held-out writing contexts scored (those the sweep did not choose on); None: all of them."""
    n_boot: int = 2000
    """Bootstrap resamples of the contexts."""
    confidence: float = 0.95
    seed: int = 0
    """Seeds the random sets, the draws and the bootstrap."""
    precision: str = "auto"
    """Matmul precision of every pass here, the clean one included (``activations.precision``; the
    trade-off of ``WhereConfig.precision``: removals are shares of a large target mass, and on the
    default study bf16 moved them by at most 0.02 (median 0.004), the same rank, at 2.6x the speed)."""

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.n_random < 1 or self.n_top_draws < 0 or self.top_pool < 1:
            raise ValueError("need n_random >= 1, n_top_draws >= 0 and top_pool >= 1")
        if (self.n_contexts is not None and self.n_contexts < 2) or self.n_boot < 100 or not 0 < self.confidence < 1:
            raise ValueError("need n_contexts >= 2 (or None), n_boot >= 100 and 0 < confidence < 1")
