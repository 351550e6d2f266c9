"""What the causal experiments measure: behaviour metrics (passed in) and side-effect metrics.

Behaviour metrics are plain callables, so any behaviour can be studied:
  ``LogitMetric(logits, mask) -> scalar tensor``: differentiable, and a *mean over the masked
      positions* (minibatches are combined weighted by their masked-position counts);
  ``TextMetric(texts) -> float``: computed on generated replies.
The emoji ones come from ``training.emoji_tokens`` / ``training.emoji_metrics``: the same token set
and counting as ``interp behavior``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from training.emoji_metrics import text_stats
from training.emoji_tokens import emoji_mass_from_logits, emoji_start_token_ids


LogitMetric = Callable[[Float[Tensor, "batch pos vocab"], Bool[Tensor, "batch pos"]], Tensor]
TextMetric = Callable[[Sequence[str]], float]


def _at_least_float32(tensor: Tensor) -> Tensor:
    """float32 for half-precision logits (softmax in bf16 loses the small emoji masses); float64 stays."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def emoji_token_ids(tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """The emoji-start token ids (``training.emoji_tokens``: the same set ``interp behavior`` uses)."""
    return torch.as_tensor(emoji_start_token_ids(tokenizer), dtype=torch.long)


def emoji_mass_metric(emoji_ids: Tensor) -> LogitMetric:
    """``LogitMetric``: emoji-start probability averaged over all scored positions (token-weighted;
    ``training.behavior`` reports the mean of per-response means instead)."""
    return functools.partial(emoji_mass_from_logits, emoji_token_ids=emoji_ids, reduction="mean")


def log_emoji_mass_metric(emoji_ids: Tensor) -> LogitMetric:
    """``LogitMetric``: mean over scored positions of log P(next token starts an emoji).

    On the log scale a neuron's effect is roughly linear in the logits (a probability near 0 or 1
    saturates), which is what a first-order attribution screen needs; at the positions where the
    merged model writes emojis the mass is far from both ends."""
    def metric(logits: Tensor, mask: Tensor) -> Tensor:
        logits = _at_least_float32(logits)
        ids = emoji_ids.to(logits.device)
        log_mass = torch.logsumexp(logits[..., ids], dim=-1) - torch.logsumexp(logits, dim=-1)
        weight = mask.to(log_mass.dtype)
        return (log_mass * weight).sum() / weight.sum().clamp(min=1.0)

    return metric


def emoji_text_metrics() -> dict[str, TextMetric]:
    """``emoji_rate`` (share of replies with an emoji, as ``training.behavior``) and
    ``emoji_sentence_ratio`` (share of sentences with an emoji, pooled over replies)."""
    def sentence_ratio(texts: Sequence[str]) -> float:
        stats = [text_stats(text) for text in texts]
        return sum(s.n_emoji_sentences for s in stats) / max(sum(s.n_sentences for s in stats), 1)

    return {"emoji_rate": lambda texts: sum(text_stats(t).n_emojis > 0 for t in texts) / max(len(texts), 1),
            "emoji_sentence_ratio": sentence_ratio}


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
