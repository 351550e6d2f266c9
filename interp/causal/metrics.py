"""What the causal experiments measure: the behaviour's target mass (passed in) and side-effect metrics.

Behaviour metrics are ``LogitMetric(logits, mask) -> scalar tensor``: differentiable, and a *mean
over the masked positions* (minibatches are combined weighted by their masked-position counts).
The target ids come from the behaviour (``activations.behaviors.Behavior.target_token_ids``); for
the emoji preset they are the token set ``interp behavior`` counts with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


LogitMetric = Callable[[Float[Tensor, "batch pos vocab"], Bool[Tensor, "batch pos"]], Tensor]


def _at_least_float32(tensor: Tensor) -> Tensor:
    """float32 for half-precision logits (softmax in bf16 loses the small target masses); float64 stays."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def target_ids_tensor(ids: Sequence[int] | Tensor) -> Tensor:
    """Target token ids as the long tensor the metrics index with."""
    return torch.as_tensor(ids, dtype=torch.long)


def log_target_mass(logits: Tensor, ids: Tensor) -> Tensor:
    """``(..., )`` log P(next token is a target), from ``(..., vocab)`` logits, in at least float32."""
    logits = _at_least_float32(logits)
    return torch.logsumexp(logits[..., ids.to(logits.device)], dim=-1) - torch.logsumexp(logits, dim=-1)


def log_target_mass_metric(target_ids: Tensor) -> LogitMetric:
    """``LogitMetric``: mean over scored positions of log P(next token is a target).

    On the log scale a neuron's effect is roughly linear in the logits (a probability near 0 or 1
    saturates), which is what a first-order attribution screen needs; at the positions where the
    tuned model shows the behaviour the mass is far from both ends."""
    def metric(logits: Tensor, mask: Tensor) -> Tensor:
        log_mass = log_target_mass(logits, target_ids)
        weight = mask.to(log_mass.dtype)
        return (log_mass * weight).sum() / weight.sum().clamp(min=1.0)

    return metric


def target_mass_metric(target_ids: Tensor) -> LogitMetric:
    """``LogitMetric``: target probability averaged over all scored positions (token-weighted), as
    ``training.behavior`` computes its mass (``target_mass_from_logits``)."""
    from training.emoji_tokens import target_mass_from_logits

    return functools.partial(target_mass_from_logits, target_ids=target_ids, reduction="mean")


def next_token_kl_sum(
    reference_logits: Float[Tensor, "batch pos vocab"], logits: Float[Tensor, "batch pos vocab"], mask: Bool[Tensor, "batch pos"]
) -> Tensor:
    """Sum over masked positions of KL(reference || intervened) of the next-token distributions."""
    ref = _at_least_float32(reference_logits).log_softmax(-1)
    new = _at_least_float32(logits).log_softmax(-1)
    kl = (ref.exp() * (ref - new)).sum(-1)
    return (kl * mask.to(kl.dtype)).sum()


def nll_sum(logits: Float[Tensor, "batch pos vocab"], input_ids: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"]) -> Tensor:
    """Sum over masked positions of -log p(next token); perplexity = exp(sum / count)."""
    logp = _at_least_float32(logits[:, :-1]).log_softmax(-1)
    target = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return -(target * mask[:, :-1].to(target.dtype)).sum()
