"""What the causal experiments measure: behaviour metrics (passed in) and side-effect metrics.

Behaviour metrics are plain callables, so any behaviour can be studied:
  ``LogitMetric(logits, mask) -> scalar tensor``: differentiable, and a *mean over the masked
      positions* (minibatches are combined weighted by their masked-position counts);
  ``TextMetric(texts) -> float``: computed on generated replies.
The emoji ones come from ``training.emoji_tokens`` / ``training.emoji_metrics`` (the same token set
and counting as ``interp behavior``); without the ``training`` package the fallbacks here are used
(and logged), which approximate the emoji-start token set by byte prefix.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import emoji
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

LogitMetric = Callable[[Float[Tensor, "batch pos vocab"], Bool[Tensor, "batch pos"]], Tensor]
TextMetric = Callable[[Sequence[str]], float]


def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE: the printable character standing for each byte, inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _at_least_float32(tensor: Tensor) -> Tensor:
    """float32 for half-precision logits (softmax in bf16 loses the small emoji masses); float64 stays."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def fallback_emoji_token_ids(tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """Tokens that start an emoji: their bytes (after an optional space) begin with F0 9F, the lead
    of U+1Fxxx where almost all emoji live. Misses emoji in U+2xxx (e.g. ❤ ☀), whose lead bytes also
    start ordinary punctuation (and ``emoji`` counts © ® ™ as emoji, so it cannot decide either);
    ``training.emoji_tokens`` is the exact set."""
    decoder = _byte_decoder()
    chosen = []
    for token, token_id in tokenizer.get_vocab().items():
        try:
            raw = bytes(decoder[ch] for ch in token)
        except KeyError:  # not a byte-level token (special tokens)
            continue
        raw = raw.lstrip(b" ")
        if raw.startswith(b"\xf0\x9f"):
            chosen.append(token_id)
    return torch.tensor(sorted(chosen), dtype=torch.long)


def emoji_token_ids(tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """The emoji-start token ids: ``training.emoji_tokens`` if present, else the fallback."""
    try:
        from training.emoji_tokens import emoji_start_token_ids
    except ImportError:
        log.warning("training.emoji_tokens not available; using the byte-prefix fallback emoji token set")
        return fallback_emoji_token_ids(tokenizer)
    return torch.as_tensor(emoji_start_token_ids(tokenizer), dtype=torch.long)


def fallback_emoji_mass(logits: Tensor, mask: Tensor, emoji_token_ids: Tensor) -> Tensor:
    """Mean over masked positions of the next-token probability on emoji tokens."""
    probs = _at_least_float32(logits).softmax(-1)[..., emoji_token_ids.to(logits.device)].sum(-1)
    mask = mask.to(probs.dtype)
    return (probs * mask).sum() / mask.sum().clamp(min=1)


def emoji_mass_metric(emoji_ids: Tensor) -> LogitMetric:
    """``LogitMetric``: emoji-start probability averaged over all scored positions (token-weighted;
    ``training.behavior`` reports the mean of per-response means instead)."""
    try:
        from training.emoji_tokens import emoji_mass_from_logits
    except ImportError:
        log.warning("training.emoji_tokens not available; using the local emoji-mass metric")
        return functools.partial(fallback_emoji_mass, emoji_token_ids=emoji_ids)
    return functools.partial(emoji_mass_from_logits, emoji_token_ids=emoji_ids, reduction="mean")


def fallback_emoji_rate(texts: Sequence[str]) -> float:
    """Fraction of replies with at least one emoji."""
    return sum(emoji.emoji_count(text) > 0 for text in texts) / max(len(texts), 1)


def emoji_text_metrics() -> dict[str, TextMetric]:
    """``emoji_rate`` (share of replies with an emoji, as ``training.behavior``) and
    ``emoji_sentence_ratio`` (share of sentences with an emoji, pooled over replies)."""
    try:
        from training.emoji_metrics import text_stats
    except ImportError:
        log.warning("training.emoji_metrics not available; emoji rate = fraction of replies with an emoji")
        return {"emoji_rate": fallback_emoji_rate}

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
