"""The suppression verdict: does the exported model stop showing the behaviour, and does it still work?

The verdict is measured on the exported folder reloaded with ``transformers`` alone (no hooks, no
project code), so it is a claim about the artifact a user would ship:

1. Rate: the share of sampled replies that show the behaviour (``activations.behaviors``), to
   held-out questions (topics never trained on), several per question, with the same per-(question, sample) random streams as the merged model's replies
   (``activations.sampling``: common random numbers, so the two conditions differ only by the
   suppression). Rates per question; the cut ``1 - suppressed / merged`` with a paired cluster
   bootstrap over questions (``interp.causal.uncertainty``).
2. Side effects on templated neutral chats that played no part in choosing the neurons: perplexity of
   both models and the mean next-token KL(merged || suppressed) per scored position.
3. Random control: the share of matched random sets of the same size (same intervention, proxy
   measurement) that removed less target mass than the chosen set (``interp.causal.sweep``).
4. Where the model writes (``interp.causal.intactness``, when measured): assistant-token KL and
   perplexity, the style of its sampled replies, a capability probe, each paired with an interval.
5. Fresh questions (when given): the same cut on questions written for the project after its
   settings were fixed, in other templates; the held-out questions of step 1 are the development set
   (settings were chosen on them).
6. The criteria: cut >= ``min_cut`` with an interval excluding 0 (on both question sets); perplexity
   within ``max_ppl_change`` either way; KL within ``max_kl``; at least ``min_random_beaten`` of the
   random sets beaten; step 4's criteria. The verdict says which hold, with the numbers; nothing is
   tuned to make them pass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from activations.behaviors import Behavior
from activations.sampling import SampledReply
from interp.causal.inputs import TokenBatch
from interp.causal.intactness import Intactness
from interp.causal.metrics import next_token_kl_sum, nll_sum
from interp.causal.uncertainty import rate, relative_cut
from training.reply_metrics import Interval


@dataclass(frozen=True)
class VerdictCriteria:
    """What a working suppressor must achieve (the issue's bar; reported, never tuned)."""

    min_cut: float = 0.5
    """Relative cut of the behaviour's rate vs the merged model."""
    max_ppl_change: float = 0.10
    """Largest relative change of neutral perplexity, either way."""
    max_kl: float = 0.05
    """Largest mean next-token KL on neutral chats, nats per token."""
    min_random_beaten: float = 0.95
    """Share of matched random sets of the same size that must remove less."""


@torch.no_grad()
def side_effects(reference: nn.Module, model: nn.Module, batch: TokenBatch, batch_size: int = 8) -> dict[str, float]:
    """Perplexity of both models and mean KL(reference || model) over ``batch``'s scored positions."""
    device = next(model.parameters()).device
    kl = nll_ref = nll_model = 0.0
    n_kl = n_nll = 0
    for chunk in batch.to(device).split(batch_size):
        ref_logits = reference(input_ids=chunk.input_ids, attention_mask=chunk.attention_mask).logits
        logits = model(input_ids=chunk.input_ids, attention_mask=chunk.attention_mask).logits
        kl += float(next_token_kl_sum(ref_logits, logits, chunk.score_mask))
        nll_ref += float(nll_sum(ref_logits, chunk.input_ids, chunk.score_mask))
        nll_model += float(nll_sum(logits, chunk.input_ids, chunk.score_mask))
        n_kl += int(chunk.score_mask.sum())
        n_nll += int(chunk.score_mask[:, :-1].sum())
    return {"kl_neutral": kl / max(n_kl, 1), "ppl_reference": math.exp(nll_ref / max(n_nll, 1)),
            "ppl_model": math.exp(nll_model / max(n_nll, 1))}


def per_question_rates(replies: Sequence[SampledReply], behavior: Behavior) -> tuple[list[str], np.ndarray]:
    """Question keys (in first-seen order) and each question's share of replies that show ``behavior``."""
    keys = list(dict.fromkeys(r.key for r in replies))
    hits = {key: [] for key in keys}
    for reply in replies:
        hits[reply.key].append(behavior.shows(reply.text))
    return keys, np.array([np.mean(hits[key]) for key in keys])


@dataclass(frozen=True)
class FreshCut:
    """Step 5: the cut on fresh questions."""

    rate_merged: Interval
    rate_suppressed: Interval
    cut: Interval
    n_questions: int
    samples_per_question: int

    def to_dict(self) -> dict[str, Any]:
        return {"rate": {"merged": self.rate_merged.to_dict(), "suppressed": self.rate_suppressed.to_dict()},
                "cut": self.cut.to_dict(), "n_questions": self.n_questions,
                "samples_per_question": self.samples_per_question}


def fresh_cut(merged: Sequence[SampledReply], suppressed: Sequence[SampledReply], behavior: Behavior, *,
              seed: int = 0) -> FreshCut:
    keys, first = per_question_rates(merged, behavior)
    keys_s, second = per_question_rates(suppressed, behavior)
    if keys != keys_s:
        raise ValueError("the fresh questions' merged and suppressed replies answer different questions")
    return FreshCut(rate(first, seed=seed), rate(second, seed=seed), relative_cut(first, second, seed=seed), len(keys),
                    len(merged) // max(len(keys), 1))


@dataclass(frozen=True)
class SuppressionVerdict:
    """Step 4's answer with every number behind it."""

    behavior: Behavior
    k: int
    method: str
    neurons: tuple[tuple[int, int], ...]
    rate_merged: Interval
    """Share of the merged model's replies that show the behaviour."""
    rate_suppressed: Interval
    cut: Interval
    ppl_merged: float
    ppl_suppressed: float
    kl_neutral: float
    random_beaten: float
    n_questions: int
    samples_per_question: int
    criteria: VerdictCriteria
    selection: dict[str, Any]
    intactness: Intactness | None = None
    fresh: FreshCut | None = None

    @property
    def ppl_increase(self) -> float:
        return self.ppl_suppressed / self.ppl_merged - 1

    def checks(self) -> dict[str, bool]:
        c = self.criteria
        return {
            "rate_cut": bool(self.cut.value >= c.min_cut and self.cut.low > 0),
            "perplexity": bool(abs(self.ppl_increase) <= c.max_ppl_change),
            "kl": bool(self.kl_neutral <= c.max_kl),
            "random_sets": bool(self.random_beaten >= c.min_random_beaten),
            **({"fresh_rate_cut": bool(self.fresh.cut.value >= c.min_cut and self.fresh.cut.low > 0)}
               if self.fresh else {}),
            **({f"intact_{name}": ok for name, ok in self.intactness.checks().items()} if self.intactness else {}),
        }

    @property
    def passed(self) -> bool:
        return all(self.checks().values())

    def sentence(self) -> str:
        """The verdict in one sentence, with its numbers."""
        r = self
        how = METHOD_WORDS.get(r.method, r.method)
        random = ("matched random sets not measured for this method" if math.isnan(r.random_beaten)
                  else f"beating {100 * r.random_beaten:.0f}% of matched random sets")
        head = (f"Suppressing {r.k} neurons ({how}) cut the merged model's "
                f"{r.behavior.noun} rate from {100 * r.rate_merged.value:.0f}% to {100 * r.rate_suppressed.value:.0f}% "
                f"(cut {100 * r.cut.value:.0f}% [{100 * r.cut.low:.0f}, {100 * r.cut.high:.0f}], "
                f"{r.n_questions} held-out questions x {r.samples_per_question} samples) at neutral perplexity "
                f"{r.ppl_merged:.1f} -> {r.ppl_suppressed:.1f} ({100 * r.ppl_increase:+.1f}%) and KL "
                f"{r.kl_neutral:.3f} nats/token, {random}")
        if r.fresh:
            f = r.fresh
            head += (f"; on {f.n_questions} fresh questions {100 * f.rate_merged.value:.0f}% -> "
                     f"{100 * f.rate_suppressed.value:.0f}% (cut {100 * f.cut.value:.0f}% [{100 * f.cut.low:.0f}, "
                     f"{100 * f.cut.high:.0f}])")
        failed = [name for name, ok in self.checks().items() if not ok]
        return head + (": every criterion met." if not failed else f"; not met: {', '.join(failed)}.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "behavior": self.behavior.spec, "k": self.k, "method": self.method, "neurons": [list(n) for n in self.neurons],
            "rate": {"merged": self.rate_merged.to_dict(), "suppressed": self.rate_suppressed.to_dict()},
            "cut": self.cut.to_dict(),
            "ppl_neutral": {"merged": self.ppl_merged, "suppressed": self.ppl_suppressed},
            "kl_neutral": {"merged": 0.0, "suppressed": self.kl_neutral},
            "ppl_increase": self.ppl_increase, "random_beaten": self.random_beaten,
            "n_questions": self.n_questions, "samples_per_question": self.samples_per_question,
            "criteria": dataclasses.asdict(self.criteria), "checks": self.checks(), "passed": self.passed,
            "sentence": self.sentence(), "selection": self.selection,
            "intactness": self.intactness.to_dict() if self.intactness else None,
            "fresh": self.fresh.to_dict() if self.fresh else None,
        }


METHOD_WORDS = {"mean": "mean ablation folded into the weights", "zero": "their weights zeroed",
                "revert": "their weights reverted to the base model's"}
"""How each export method reads in a verdict's sentence (``interp.interventions.export``)."""


def suppression_verdict(
    merged_replies: Sequence[SampledReply], suppressed_replies: Sequence[SampledReply], effects: dict[str, float],
    behavior: Behavior, *, k: int, method: str, neurons: Sequence[tuple[int, int]], random_beaten: float,
    criteria: VerdictCriteria = VerdictCriteria(), selection: dict[str, Any] | None = None, seed: int = 0,
    intactness: Intactness | None = None, fresh: FreshCut | None = None,
) -> SuppressionVerdict:
    """Steps 1-4 from the two models' replies (same keys, samples and seeds) and ``side_effects``."""
    keys, merged = per_question_rates(merged_replies, behavior)
    keys_s, suppressed = per_question_rates(suppressed_replies, behavior)
    if keys != keys_s:
        raise ValueError("the merged and suppressed replies answer different questions; sample both with the same "
                         "keys, samples and seed")
    samples = len(merged_replies) // max(len(keys), 1)
    return SuppressionVerdict(
        behavior, k, method, tuple(tuple(n) for n in neurons), rate(merged, seed=seed), rate(suppressed, seed=seed),
        relative_cut(merged, suppressed, seed=seed), effects["ppl_reference"], effects["ppl_model"],
        effects["kl_neutral"], random_beaten, len(keys), samples, criteria, dict(selection or {}), intactness, fresh)
