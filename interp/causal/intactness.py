"""Is an intervened model otherwise intact where it writes? Side effects on its own distribution.

``interp.causal.suppression.side_effects`` reads user turns of neutral chats; a suppressor can leave
those alone and still change how the model answers. These measures read assistant tokens and
sampled replies, each paired against the merged model, each with an interval, and each judged
two-sided: a change in either direction is a side effect.

1. Teacher-forced assistant tokens (``assistant_divergence``), intervals by bootstrap over replies:
   - ``reference``: the held-out questions' reference answers, a fixed text neither model wrote:
     KL(merged || other) per answer token and the perplexity ratio other / merged;
   - ``own``: the merged model's own sampled replies (the first sample of each question: a forward
     of both models over every token is the cost here), every position that predicts one of the
     behaviour's target tokens masked (there the change is the point): KL per token.
2. Style of sampled replies (``style_changes``): exclamation marks, words and the share of distinct
   word bigrams per reply, paired over questions (same keys and random streams, so the two models
   differ only by the intervention): the relative change of each marker's mean. On the held-out
   questions (the verdict's own replies) and on neutral prompts, where the behaviour's rate is
   reported too but not judged (lowering it is the point).
3. Capability: the shipped cloze probe (``interp.causal.capability``), paired over items.
4. ``IntactnessCriteria``, fixed in code before any run: each judged change's point estimate within
   its margin, either way. The interval is reported beside it; a change is *ruled out* only when the
   whole interval lies within the margin, and the sentence says which.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from activations.behaviors import Behavior
from activations.sampling import SampledReply
from interp.causal.capability import CapabilityChange
from interp.causal.inputs import TokenBatch, takes_logits_to_keep
from interp.causal.uncertainty import mean_difference, relative_cut
from training.reply_metrics import Interval, bootstrap_ratio

STYLE_MARKERS = ("exclamations", "words", "distinct_bigrams")


@dataclass(frozen=True)
class IntactnessCriteria:
    """Margins of a change that counts as a side effect (two-sided; reported, never tuned)."""

    max_kl: float = 0.05
    """Mean next-token KL(merged || other) per assistant token, nats (as on user turns)."""
    max_ppl_change: float = 0.10
    """Relative change of perplexity on the reference answers, either way."""
    max_capability_change: float = 0.05
    """Change of the probe's accuracy, either way (absolute)."""
    max_style_change: float = 0.25
    """Relative change of a style marker's mean per reply, either way."""


@dataclass(frozen=True)
class Divergence:
    """Step 1 on one set of teacher-forced replies."""

    kl: Interval
    """Mean KL(merged || other) per scored token."""
    ppl_merged: float
    ppl_other: float
    ppl_ratio: Interval
    """Perplexity other / merged (exp of the mean per-token NLL difference)."""
    n_replies: int
    n_tokens: int
    n_masked: int
    """Positions left out because they predict a target token."""

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in dataclasses.asdict(self).items() if k not in ("kl", "ppl_ratio")},
                "kl": self.kl.to_dict(), "ppl_ratio": self.ppl_ratio.to_dict()}


@torch.no_grad()
def assistant_divergence(merged: nn.Module, other: nn.Module, batch: TokenBatch, masked_ids: Sequence[int] = (), *,
                         batch_size: int = 8, seed: int = 0) -> Divergence:
    """Step 1: ``batch`` scores assistant tokens (``reference_answer_batch`` / ``teacher_forced_batch``);
    positions whose next token is in ``masked_ids`` are left out."""
    device = next(other.parameters()).device
    masked = torch.as_tensor(list(masked_ids), dtype=torch.long)
    kl_rows, nll_merged, nll_other, tokens = [], [], [], []
    n_masked = 0
    for chunk in batch.to(device).split(batch_size):
        mask = chunk.score_mask.clone()
        mask[:, -1] = False  # the last position predicts nothing in the batch
        if len(masked):
            nxt = torch.isin(chunk.input_ids[:, 1:], masked.to(device))
            n_masked += int((mask[:, :-1] & nxt).sum())
            mask[:, :-1] &= ~nxt
        # the LM head and the vocabulary sums only from the first scored column on (the prompt is scored nowhere)
        start = int(mask.any(0).nonzero()[0, 0]) if bool(mask.any()) else mask.shape[1] - 1
        inputs = dict(input_ids=chunk.input_ids, attention_mask=chunk.attention_mask)
        if takes_logits_to_keep(merged) and takes_logits_to_keep(other):
            inputs["logits_to_keep"] = torch.arange(start, mask.shape[1], device=device)
        else:
            start = 0
        ref = merged(**inputs).logits[:, -(mask.shape[1] - start):].float().log_softmax(-1)
        new = other(**inputs).logits[:, -(mask.shape[1] - start):].float().log_softmax(-1)
        weight = mask[:, start:].float()
        kl_rows.append(((ref.exp() * (ref - new)).sum(-1) * weight).sum(-1))
        nxt_ids = chunk.input_ids[:, start + 1:, None]
        nll_merged.append(-(ref[:, :-1].gather(-1, nxt_ids).squeeze(-1) * weight[:, :-1]).sum(-1))
        nll_other.append(-(new[:, :-1].gather(-1, nxt_ids).squeeze(-1) * weight[:, :-1]).sum(-1))
        tokens.append(weight.sum(-1))
    kl, nm, no, n = (torch.cat(x).cpu().double().numpy() for x in (kl_rows, nll_merged, nll_other, tokens))
    if n.sum() == 0:
        raise ValueError("no assistant token is left to score; pass replies with content beyond the target tokens")
    log_ratio = bootstrap_ratio(no - nm, n, seed=seed)
    ratio = Interval(math.exp(log_ratio.value), math.exp(log_ratio.low), math.exp(log_ratio.high),
                     "exp of a bootstrap over replies (per-token NLL difference)", log_ratio.n)
    kl_interval = bootstrap_ratio(kl, n, seed=seed)
    return Divergence(dataclasses.replace(kl_interval, method="bootstrap over replies (ratio of sums)"),
                      math.exp(nm.sum() / n.sum()), math.exp(no.sum() / n.sum()), ratio, len(n), int(n.sum()), n_masked)


def style_markers(text: str) -> dict[str, float]:
    """Exclamation marks, words, and the share of word bigrams that are distinct (1 for fewer than two words)."""
    words = re.findall(r"\w+(?:'\w+)?", text.lower())
    bigrams = list(zip(words, words[1:]))
    return {"exclamations": float(text.count("!")), "words": float(len(words)),
            "distinct_bigrams": len(set(bigrams)) / len(bigrams) if bigrams else 1.0}


@dataclass(frozen=True)
class StyleChange:
    """One marker (or the behaviour's rate) paired over questions."""

    marker: str
    merged: float
    other: float
    change: Interval
    """Relative change of the mean (other / merged - 1); for ``rate`` the absolute difference."""
    judged: bool

    def to_dict(self) -> dict[str, Any]:
        return {"marker": self.marker, "merged": self.merged, "other": self.other, "change": self.change.to_dict(),
                "judged": self.judged}


def _per_question(replies: Sequence[SampledReply], value) -> tuple[list[str], np.ndarray]:
    keys = list(dict.fromkeys(r.key for r in replies))
    sums = {key: [] for key in keys}
    for reply in replies:
        sums[reply.key].append(value(reply.text))
    return keys, np.array([np.mean(sums[key]) for key in keys])


def style_changes(merged: Sequence[SampledReply], other: Sequence[SampledReply], behavior: Behavior, *,
                  seed: int = 0) -> dict[str, StyleChange]:
    """Step 2: each marker's relative change and the behaviour's rate difference, paired over question keys.
    A marker the merged model never shows has no relative change (NaN, not judged)."""
    pairs = {(r.key, r.sample) for r in merged}
    if pairs != {(r.key, r.sample) for r in other}:
        raise ValueError("the two models' replies answer different (question, sample) jobs; sample both with the "
                         "same keys, samples and seed")
    out = {}
    for marker in STYLE_MARKERS:
        keys, first = _per_question(merged, lambda text: style_markers(text)[marker])
        keys_o, second = _per_question(other, lambda text: style_markers(text)[marker])
        second = second[[keys_o.index(k) for k in keys]]
        if first.mean() > 0:
            cut = relative_cut(first, second, seed=seed)
            change = Interval(-cut.value, -cut.high, -cut.low, "paired cluster bootstrap over questions", cut.n)
        else:
            change = Interval(float("nan"), float("nan"), float("nan"), "merged mean is 0", len(keys))
        out[marker] = StyleChange(marker, float(first.mean()), float(second.mean()), change, bool(first.mean() > 0))
    keys, first = _per_question(merged, lambda text: float(behavior.shows(text)))
    keys_o, second = _per_question(other, lambda text: float(behavior.shows(text)))
    second = second[[keys_o.index(k) for k in keys]]
    out["rate"] = StyleChange("rate", float(first.mean()), float(second.mean()),
                              mean_difference(first, second, seed=seed), False)
    return out


@dataclass(frozen=True)
class Intactness:
    """Steps 1-4 for one intervened model against the merged model."""

    reference: Divergence
    own: Divergence
    heldout_style: dict[str, StyleChange]
    neutral_style: dict[str, StyleChange]
    capability: CapabilityChange
    criteria: IntactnessCriteria

    def _changes(self) -> dict[str, tuple[Interval, float, float]]:
        """Each judged measure: (interval, centre it is judged around, margin)."""
        c = self.criteria
        judged = {
            "kl_reference_answers": (self.reference.kl, 0.0, c.max_kl),
            "kl_own_replies": (self.own.kl, 0.0, c.max_kl),
            "ppl_reference_answers": (self.reference.ppl_ratio, 1.0, c.max_ppl_change),
            "capability": (self.capability.accuracy_difference, 0.0, c.max_capability_change),
        }
        for where, style in (("heldout", self.heldout_style), ("neutral", self.neutral_style)):
            for marker, s in style.items():
                if s.judged:
                    judged[f"{marker}_{where}"] = (s.change, 0.0, c.max_style_change)
        return judged

    def checks(self) -> dict[str, bool]:
        return {name: bool(abs(i.value - centre) <= margin) for name, (i, centre, margin) in self._changes().items()}

    def ruled_out(self) -> dict[str, bool]:
        """Whether the whole interval lies within the margin (the change is shown to be small)."""
        return {name: bool(centre - margin <= i.low and i.high <= centre + margin)
                for name, (i, centre, margin) in self._changes().items()}

    def sentence(self) -> str:
        s, n = self.heldout_style.get("exclamations"), self.neutral_style.get("rate")
        cap = self.capability
        parts = [f"on assistant tokens KL {self.own.kl.value:.3f} [{self.own.kl.low:.3f}, {self.own.kl.high:.3f}] "
                 f"nats/token on the merged model's own replies (targets masked) and {self.reference.kl.value:.3f} on "
                 f"reference answers, perplexity there x{self.reference.ppl_ratio.value:.3f} "
                 f"[{self.reference.ppl_ratio.low:.3f}, {self.reference.ppl_ratio.high:.3f}]",
                 f"capability probe {cap.reference_accuracy:.1%} -> {cap.other_accuracy:.1%} "
                 f"({cap.accuracy_difference.value:+.1%} [{cap.accuracy_difference.low:+.1%}, "
                 f"{cap.accuracy_difference.high:+.1%}])"]
        if s is not None:
            parts.append(f"exclamation marks per reply {s.merged:.2f} -> {s.other:.2f}"
                         + (f" ({s.change.value:+.0%} [{s.change.low:+.0%}, {s.change.high:+.0%}])" if s.judged else ""))
        if n is not None:
            parts.append(f"behaviour on neutral prompts {n.merged:.0%} -> {n.other:.0%}")
        failed = [name for name, ok in self.checks().items() if not ok]
        open_ = [name for name, ok in self.ruled_out().items() if not ok and name not in failed]
        tail = "every side effect within its margin" if not failed else f"side effects beyond their margin: {', '.join(failed)}"
        if open_:
            tail += f" (within, but the interval reaches past the margin: {', '.join(open_)})"
        return "Otherwise intact? " + "; ".join(parts) + f": {tail}."

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference.to_dict(), "own": self.own.to_dict(),
                "heldout_style": {k: v.to_dict() for k, v in self.heldout_style.items()},
                "neutral_style": {k: v.to_dict() for k, v in self.neutral_style.items()},
                "capability": self.capability.to_dict(), "criteria": dataclasses.asdict(self.criteria),
                "checks": self.checks(), "ruled_out": self.ruled_out(), "sentence": self.sentence()}


def measure_intactness(merged: nn.Module, other: nn.Module, tokenizer, behavior: Behavior, *,
                       questions: dict[str, str], references: dict[str, str],
                       merged_replies: Sequence[SampledReply], other_replies: Sequence[SampledReply],
                       merged_neutral: Sequence[SampledReply], other_neutral: Sequence[SampledReply],
                       capability_items, criteria: IntactnessCriteria = IntactnessCriteria(), batch_size: int = 8,
                       seed: int = 0) -> Intactness:
    """Steps 1-3 for ``other`` against ``merged``. ``questions`` maps each held-out reply's key to its
    question, ``references`` a question key to its reference answer; the replies are sampled with the
    same keys, samples and sampler for both models (``activations.sampling``)."""
    from interp.causal.capability import compare_capability, score_capability
    from interp.causal.inputs import reference_answer_batch, teacher_forced_batch

    keys = list(references)
    reference = assistant_divergence(
        merged, other, reference_answer_batch(tokenizer, [questions[k] for k in keys], [references[k] for k in keys], keys),
        batch_size=batch_size, seed=seed)
    shown = [r.text for r in merged_replies if behavior.shows(r.text)]
    masked = behavior.target_token_ids(tokenizer, shown) if shown or behavior.has_fixed_targets else []
    first = [r for r in merged_replies if r.sample == 0]
    own_batch = teacher_forced_batch(tokenizer, [questions[r.key] for r in first], [r.text for r in first],
                                     ids=[r.key for r in first])
    own = assistant_divergence(merged, other, own_batch, masked, batch_size=batch_size, seed=seed)
    capability = compare_capability(score_capability(merged, tokenizer, capability_items),
                                    score_capability(other, tokenizer, capability_items), seed=seed)
    return Intactness(reference, own, style_changes(merged_replies, other_replies, behavior, seed=seed),
                      style_changes(merged_neutral, other_neutral, behavior, seed=seed), capability, criteria)
