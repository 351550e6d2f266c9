"""The screen: which neurons does the merged model need to show its behaviour, and at what cost?

Necessity direction (the question suppression asks): the receiver is the *merged* model and each
neuron's counterfactual value is what the *base* model computes on the same tokens. The metric M is
the mean over writing contexts (``interp.causal.inputs.writing_batch``) of log P(target) at the
positions where the merged model started the behaviour (its target tokens: ``activations.behaviors``);
on the log scale a neuron's effect is close to linear, unlike the tiny, saturated probability the
base model assigns.

1. Attribution patching (first order, every neuron at once): one forward and one backward pass give
   dM/da for every neuron and position; the estimate of patching neuron i is
   sum over positions of dM/da_i x (a'_i - a_i), with a' the base values ("patch") or the neuron's
   mean over content tokens of neutral chats ("mean", the suppressor's intervention). The same
   gradients serve both.
2. Cancellation guard (AtP*, Kramar et al. 2024): a neuron whose positions push M both ways can
   have a small net estimate and a large true effect, so the shortlist also takes the neurons with
   the largest sum of |per-position contributions|.
3. Exact verification: the shortlist is mean-ablated neuron by neuron for real (resumed passes,
   ``interp.causal.proxy``): its true effect on M and its neutral-chat KL, measured exactly (the
   KL's gradient is zero at the unedited model, so first order cannot estimate it).
   Selectivity = behaviour effect per unit of KL, ``-dM / (KL + kl_floor)``; a shortlisted neuron whose
   KL alone exceeds ``load_bearing_kl`` is load-bearing (an outlier by behaviour) and is ranked out.
4. A random sample of neurons is patched exactly too, on a few of the contexts (estimates
   recomputed on the same ones): the Spearman correlation of estimate and exact effect there, and
   whether any sampled neuron's exact effect exceeds the 100th-largest estimate, say whether the
   screen misses neurons (false negatives), not only whether its top is right.
5. On the same contexts, each estimator's own top is intervened on exactly too, and the sample with
   the ablation as well: Spearman, recall@k and the neurons it may miss, per estimator
   (``interp.causal.estimators``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from torch import Tensor, nn

from interp.causal.attribution import attribute
from interp.causal.config import ScreenConfig
from interp.causal.estimators import ESTIMATORS, EstimatorCheck, check_estimator, top_of
from interp.causal.metrics import log_target_mass_metric
from interp.causal.proxy import ProxySuite, measure_sets
from interp.causal.results import write_json, write_text
from interp.interventions import Neuron, NeuronSet

log = logging.getLogger(__name__)

SCHEMA = "neurodiff.screen/1"


@dataclass(frozen=True)
class ScreenCheck:
    """Attribution vs exact patching on a random sample (step 4)."""

    n: int
    n_contexts: int
    """Writing contexts both sides were computed on."""
    spearman: float
    sign_agreement: float
    threshold: float
    """|Estimate| of the 100th-ranked neuron of the whole screen."""
    n_above_threshold: int
    """Sampled neurons whose |exact effect| exceeds ``threshold``."""
    max_exact_over_threshold: float
    """Largest |exact effect| among the sampled neurons divided by ``threshold``."""
    seconds_per_neuron: float
    exceeding: tuple[dict, ...] = ()
    """The sampled neurons above ``threshold`` (the screen's false negatives): layer, index, estimate,
    exact effect and the estimate's rank among all neurons (1 = largest |estimate|)."""
    n_missed: int = 0
    """Of those, the ones the screen ranked below 100: the false negatives the check is for (a neuron
    above the threshold whose own estimate is in the top 100 was found, not missed)."""


@dataclass(frozen=True, eq=False)
class ScreenResult:
    """Estimates for every neuron, the exact shortlist, the random-sample check."""

    config: ScreenConfig
    layers: tuple[int, ...]
    patch_estimates: np.ndarray
    """``(n_layers, d_mlp)``: estimated change of M when the neuron takes its base value."""
    mean_estimates: np.ndarray
    """The same for mean ablation."""
    guard: np.ndarray
    """Sum over positions of |contribution| for the patch estimate."""
    metric_clean: float
    shortlist: pd.DataFrame
    """layer, index, mean_estimate, exact_effect, kl_neutral, selectivity, load_bearing (exact)."""
    random: pd.DataFrame
    """layer, index, patch_estimate, exact_effect."""
    check: ScreenCheck | None
    seconds_attribution: float
    excluded: tuple[Neuron, ...] = field(default=())
    """Neurons kept out of the ranking (outliers from the diff)."""
    estimators: tuple[EstimatorCheck, ...] = ()
    """Each estimator against exact values on its own top and the sample (step 5)."""

    def ranking(self) -> list[Neuron]:
        """Candidates for suppression, best first: the verified shortlist by selectivity (load-bearing
        and excluded neurons left out), then every other neuron by its mean-ablation estimate."""
        excluded = set(self.excluded)
        verified = self.shortlist[~self.shortlist["load_bearing"]].sort_values("selectivity", ascending=False)
        first = [(int(r.layer), int(r.index)) for r in verified.itertuples() if (int(r.layer), int(r.index)) not in excluded]
        seen = {(int(r.layer), int(r.index)) for r in self.shortlist.itertuples()} | excluded
        order = np.argsort(self.mean_estimates, axis=None, kind="stable")  # most negative (removes the behaviour) first
        rows, cols = np.unravel_index(order, self.mean_estimates.shape)
        rest = [(self.layers[r], int(c)) for r, c in zip(rows, cols)
                if (self.layers[r], int(c)) not in seen and self.mean_estimates[r, c] < 0]
        return first + rest

    def load_bearing(self) -> list[Neuron]:
        rows = self.shortlist[self.shortlist["load_bearing"]]
        return list(zip(rows["layer"].astype(int), rows["index"].astype(int)))

    def to_dict(self, top: int = 100) -> dict:
        flat = pd.DataFrame({"layer": np.repeat(self.layers, self.mean_estimates.shape[1]),
                             "index": np.tile(np.arange(self.mean_estimates.shape[1]), len(self.layers)),
                             "patch_estimate": self.patch_estimates.ravel(), "mean_estimate": self.mean_estimates.ravel()})
        top_patch = flat.reindex(flat["patch_estimate"].abs().sort_values(ascending=False).index).head(top)
        return {
            "schema": SCHEMA,
            "config": dataclasses.asdict(self.config),
            "metric": "mean over writing contexts of log P(target) where the merged model started the behaviour",
            "metric_clean": self.metric_clean,
            "seconds_attribution": self.seconds_attribution,
            "check": dataclasses.asdict(self.check) if self.check else None,
            "estimators": {check.name: check.to_dict() for check in self.estimators},
            "shortlist": self.shortlist.to_dict(orient="records"),
            "random": self.random.to_dict(orient="records"),
            "top_patch_estimates": top_patch.to_dict(orient="records"),
            "load_bearing": [list(n) for n in self.load_bearing()],
            "excluded": [list(n) for n in self.excluded],
            "ranking_head": [list(n) for n in self.ranking()[:200]],
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """``path`` (JSON summary) and ``path`` with ``.csv`` (every neuron's estimates)."""
        path = Path(path)
        flat = pd.DataFrame({"layer": np.repeat(self.layers, self.mean_estimates.shape[1]),
                             "index": np.tile(np.arange(self.mean_estimates.shape[1]), len(self.layers)),
                             "patch_estimate": self.patch_estimates.ravel(), "mean_estimate": self.mean_estimates.ravel(),
                             "guard": self.guard.ravel()})
        write_text(path.with_suffix(".csv"), flat.to_csv(index=False, float_format="%.6g"), overwrite=overwrite)
        return write_json(path, self.to_dict(), overwrite=overwrite)


def attribution(model: nn.Module, suite: ProxySuite, means: dict[int, Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Steps 1-2 (``interp.causal.attribution.attribute``): (patch estimates, mean estimates, guard,
    clean M, seconds)."""
    donors = suite.donor_values["contexts"]
    found = attribute(model, suite.contexts, log_target_mass_metric(suite.target_ids), {
        "patch": lambda index, chunk, acts: donors[index],
        "mean": lambda index, chunk, acts: {layer: means[layer].to(a).expand_as(a) for layer, a in acts.items()},
    })
    patch, mean = found["patch"], found["mean"]
    return patch.scores, mean.scores, patch.magnitude, patch.metric_clean, patch.seconds


def screen(model: nn.Module, suite: ProxySuite, means: dict[int, Tensor], config: ScreenConfig = ScreenConfig(), *,
           exclude: list[Neuron] | tuple[Neuron, ...] = ()) -> ScreenResult:
    """Steps 1-4 of the module docstring on ``model`` (the merged model); ``suite`` must carry the base
    model's values (``build_proxy_suite(..., donor=base)``); ``exclude``: neurons never ranked (outliers)."""
    if suite.donor_values is None:
        raise ValueError("the screen patches base values: build the proxy suite with donor=the base model")
    patch, mean, guard, clean, seconds = attribution(model, suite, means)
    layers = tuple(sorted(means))
    n_layers, width = mean.shape
    excluded = set(exclude)
    flat_order = [(layers[r], int(c)) for r, c in zip(*np.unravel_index(np.argsort(mean, axis=None, kind="stable"), mean.shape))]
    shortlist = [n for n in flat_order if n not in excluded][: config.n_shortlist]
    guard_order = [(layers[r], int(c)) for r, c in zip(*np.unravel_index(np.argsort(-guard, axis=None, kind="stable"), guard.shape))]
    shortlist += [n for n in guard_order if n not in excluded and n not in shortlist][: config.n_guard]
    exact = measure_sets(model, suite, [NeuronSet.from_pairs([n]) for n in shortlist], "mean", means,
                         max_copies=config.max_copies, desc="screen: shortlist")
    rows = []
    for (layer, index), result in zip(shortlist, exact):
        effect = result.log_mass_change
        rows.append({"layer": layer, "index": index, "mean_estimate": float(mean[layers.index(layer), index]),
                     "exact_effect": effect, "kl_neutral": result.kl_neutral,
                     "selectivity": max(0.0, -effect) / (result.kl_neutral + config.kl_floor),
                     "load_bearing": result.kl_neutral > config.load_bearing_kl})
    rng = np.random.default_rng(config.seed)
    sample = [(layers[int(f // width)], int(f % width)) for f in rng.choice(n_layers * width, config.n_random, replace=False)]
    check_suite = suite.head(config.check_contexts)
    check_patch, check_mean = (attribution(model, check_suite, means)[:2] if check_suite.n_contexts < suite.n_contexts
                               else (patch, mean))
    started = time.perf_counter()
    random_exact = measure_sets(model, check_suite, [NeuronSet.from_pairs([n]) for n in sample], "patch",
                                neutral=False, max_copies=config.max_copies, desc="screen: random sample")
    per_neuron = (time.perf_counter() - started) / max(len(sample), 1)
    random_rows = pd.DataFrame({"layer": [n[0] for n in sample], "index": [n[1] for n in sample],
                                "patch_estimate": [float(check_patch[layers.index(n[0]), n[1]]) for n in sample],
                                "exact_effect": [r.log_mass_change for r in random_exact]})
    check = None
    if len(sample) > 2:
        top = np.sort(np.abs(check_patch), axis=None)
        threshold = float(top[-100]) if top.size >= 100 else float(top[-1])
        exact_abs = random_rows["exact_effect"].abs()
        rho = stats.spearmanr(random_rows["patch_estimate"], random_rows["exact_effect"]).statistic
        flat = np.abs(check_patch)
        exceeding = tuple(
            {"layer": int(row.layer), "index": int(row.index), "patch_estimate": float(row.patch_estimate),
             "exact_effect": float(row.exact_effect),
             "estimate_rank": int((flat > abs(row.patch_estimate)).sum()) + 1}
            for row in random_rows[exact_abs > threshold].itertuples())
        check = ScreenCheck(len(sample), check_suite.n_contexts, float(rho),
                            float(np.mean(np.sign(random_rows["patch_estimate"]) == np.sign(random_rows["exact_effect"]))),
                            threshold, int((exact_abs > threshold).sum()),
                            float(exact_abs.max() / threshold) if threshold > 0 else float("inf"), per_neuron,
                            exceeding, sum(m["estimate_rank"] > 100 for m in exceeding))
        log.info("screen check on %d random neurons: Spearman %.3f, %d above the 100th estimate", len(sample), rho,
                 check.n_above_threshold)
    estimators = check_estimators(model, check_suite, means, {"change": check_patch, "ablation": check_mean}, layers,
                                  sample, {"change": random_rows["exact_effect"].to_numpy()}, excluded, config)
    return ScreenResult(config, layers, patch, mean, guard, clean, pd.DataFrame(rows), random_rows, check, seconds,
                        tuple(sorted(excluded)), estimators)


def check_estimators(model: nn.Module, suite: ProxySuite, means: dict[int, Tensor], estimates: dict[str, np.ndarray],
                     layers: tuple[int, ...], sample: list[Neuron], sample_exact: dict[str, np.ndarray],
                     excluded: set[Neuron], config: ScreenConfig) -> tuple[EstimatorCheck, ...]:
    """Step 5: ``estimates`` computed on ``suite``'s contexts; ``sample_exact`` holds the sample's exact
    effects already measured (by estimator name); the rest is measured here."""
    if config.n_top_check < 2 or len(sample) < 2:
        return ()
    checks = []
    for name, estimate in estimates.items():
        mode = ESTIMATORS[name]
        top = top_of(estimate, layers, config.n_top_check, excluded)
        exact_top = measure_sets(model, suite, [NeuronSet.from_pairs([n]) for n in top], mode, means, neutral=False,
                                 max_copies=config.max_copies, desc=f"screen: {name} top")
        if name in sample_exact:
            exact_sample = sample_exact[name]
        else:
            exact_sample = np.array([r.log_mass_change for r in measure_sets(
                model, suite, [NeuronSet.from_pairs([n]) for n in sample], mode, means, neutral=False,
                max_copies=config.max_copies, desc=f"screen: {name} sample")])
        frame = lambda neurons, exact: pd.DataFrame({  # noqa: E731
            "layer": [n[0] for n in neurons], "index": [n[1] for n in neurons],
            "estimate": [float(estimate[layers.index(n[0]), n[1]]) for n in neurons], "exact": list(exact)})
        checks.append(check_estimator(name, frame(top, [r.log_mass_change for r in exact_top]),
                                      frame(sample, exact_sample), estimate.size, config.recall_k, suite.n_contexts))
        log.info("screen: %s estimator, Spearman %.2f on its top %d and %.2f on the sample; recall@%d %.0f%%", name,
                 checks[-1].spearman_top, len(top), checks[-1].spearman_sample, config.recall_k[-1],
                 100 * list(checks[-1].recall.values())[-1])
    return tuple(checks)
