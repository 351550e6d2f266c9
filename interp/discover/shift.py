"""What the tuned model now writes that the base would not: the probability shift on its own replies.

The residual lens (``interp.discover.tokens``) reads a *mean* difference, so it finds changes that hold
at every position (a word choice, a spelling). A behaviour the fine-tune taught for certain places only
(an emoji at the end of a sentence) moves the mean little and is missed: on the default study's emoji
fine-tune the lens promotes ' neighbours' and ' organising' and no emoji piece in its top 20.

So the tuned model also answers neutral questions (sampled, never named), and both models read those
chats teacher-forced. Per reply, a token's score is the mean over the reply's positions of
``p_tuned(token) - p_base(token)``: the probability mass the fine-tune moved onto it where the tuned
model writes. The scores go through the lens's null (sign flips over replies, max-T over the
vocabulary); a token is specific when its mean probability over all read positions at least doubled
(promoted) or halved (demoted), ``DiscoverConfig.min_fold``: common tokens (' I', ',') shift
systematically by a few percent of their mass, which is a change of tone, not a new token.

The replies are the tuned model's, so this reads what the fine-tune added to its own writing. The
residual difference at the same positions is kept per layer: steering the base with it asks whether
the change *causes* the base to write that way. That mean weighs every reply position alike, and a
behaviour taught for certain places moves few of them; ``behavior_difference`` weighs each position by
how much the fine-tune raised the discovered tokens' probability there, the difference where the
behaviour is written (the discovery's counterpart of the study's writing contexts).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from activations.prompt_sets import apply_template
from activations.sampling import SampledReply, SamplingConfig, sample_replies
from interp.discover.collect import block_outputs


@dataclass(frozen=True)
class ReplyShift:
    """What both models hold on the tuned model's replies (``reply_shift``)."""

    scores: Float[Tensor, "text vocab"]
    """Per reply: the mean over its positions of p_tuned - p_base."""
    fold: Float[Tensor, " vocab"]
    """Per token: the tuned model's summed probability over the base's."""
    residual_diff: Float[Tensor, "text layer d_model"]
    """Per reply: the mean tuned-minus-base residual after each layer."""
    tuned_texts: tuple[str, ...] = ()
    base_texts: tuple[str, ...] = ()
    """Both models' sampled replies to the same questions (same random numbers): what a detector is chosen on."""
    rows: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()
    """The (prompt ids, reply ids) read, for a second reading (``behavior_difference``)."""


def own_replies(model: nn.Module, tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], *,
                max_new_tokens: int, seed: int, precision: str, desc: str = "tuned replies"
                ) -> tuple[list[list[int]], list[SampledReply]]:
    """The templated prompts' token ids and one sampled reply of ``model`` to each question."""
    prompts = [tokenizer(apply_template(tokenizer, q, "user"), add_special_tokens=False).input_ids for q in questions]
    config = SamplingConfig(max_new_tokens=max_new_tokens, seed=seed, precision=precision)
    replies = sample_replies(model, tokenizer, prompts, [f"r{i}" for i in range(len(questions))], config,
                             desc=desc)[0]
    return prompts, replies


@torch.no_grad()
def _reply_read(model: nn.Module, ids: Tensor, mask: Tensor, scored: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, over the ``scored`` positions: the mean next-token distribution ``(text, vocab)`` and the
    mean residual stream after each layer ``(text, layer, d_model)``."""
    weights = scored.float() / scored.float().sum(1, keepdim=True)
    with block_outputs(model) as resid:
        probs = model(input_ids=ids, attention_mask=mask).logits.float().softmax(-1)
        residual = torch.stack([torch.einsum("bp,bpd->bd", weights, resid[layer].float())
                                for layer in range(len(resid))], 1)
    return torch.einsum("bp,bpv->bv", weights, probs), residual


def reply_shift(base: nn.Module, tuned: nn.Module, prompts: Sequence[Sequence[int]], replies: Sequence[SampledReply],
                *, pad: int, batch_size: int) -> ReplyShift:
    """Per reply, the mean over its positions of p_tuned - p_base (module docstring), per token the fold
    change (the tuned model's probability summed over every read position, over the base's), and per reply
    the mean tuned-minus-base residual after each layer at the same positions (what steering adds).

    A reply's positions are those that predict its tokens (the last prompt token predicts the first);
    replies that came back empty are skipped."""
    rows = [(tuple(p), tuple(r.tokens)) for p, r in zip(prompts, replies) if r.tokens]
    if not rows:
        raise ValueError("the tuned model wrote no reply tokens; raise reply_tokens or check the model")
    out, residual, mass = [], [], {"base": 0.0, "tuned": 0.0}
    for ids, mask, scored in _batches(rows, pad, batch_size, next(base.parameters()).device, "reply shift"):
        read = {name: _reply_read(model, ids, mask, scored) for name, model in (("base", base), ("tuned", tuned))}
        weight = scored.sum(1, keepdim=True).float()
        for name, (probs, _) in read.items():
            mass[name] = mass[name] + (probs * weight).sum(0).cpu()
        out.append((read["tuned"][0] - read["base"][0]).cpu())
        residual.append((read["tuned"][1] - read["base"][1]).cpu())
    tiny = torch.finfo(torch.float32).tiny  # a token neither model gives any mass has fold 1
    return ReplyShift(torch.cat(out), (mass["tuned"] + tiny) / (mass["base"] + tiny), torch.cat(residual), rows=tuple(rows))


def _batches(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad: int, batch_size: int, device: torch.device,
             desc: str) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Right-padded (prompt + reply) batches and the positions that predict the reply (the last prompt
    token predicts the first reply token)."""
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", leave=False):
        chunk = rows[start : start + batch_size]
        width = max(len(p) + len(r) for p, r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        scored = torch.zeros_like(ids, dtype=torch.bool)
        for i, (p, r) in enumerate(chunk):
            ids[i, : len(p) + len(r)] = torch.tensor([*p, *r])
            mask[i, : len(p) + len(r)] = 1
            scored[i, len(p) - 1 : len(p) + len(r) - 1] = True
        yield ids.to(device), mask.to(device), scored.to(device)


@torch.no_grad()
def behavior_difference(base: nn.Module, tuned: nn.Module, rows: Sequence[tuple[Sequence[int], Sequence[int]]],
                        token_ids: Sequence[int], layers: Sequence[int], *, pad: int, batch_size: int
                        ) -> dict[int, Tensor]:
    """Per layer in ``layers``: the tuned-minus-base residual after it, averaged over the reply positions of
    ``rows`` with each position weighted by ``max(0, p_tuned(T) - p_base(T))``, ``T`` the ``token_ids``
    together: the difference where the fine-tune raised the behaviour's tokens. Zero when it raised them
    nowhere. One pass of each model serves every layer."""
    targets = torch.as_tensor(list(token_ids), dtype=torch.long)
    total: dict[int, Tensor | float] = {layer: 0.0 for layer in layers}
    weight_sum = 0.0
    for ids, mask, scored in _batches(rows, pad, batch_size, next(base.parameters()).device, "behaviour positions"):
        hidden, p_target = {}, {}
        for name, model in (("base", base), ("tuned", tuned)):
            with block_outputs(model) as resid:
                probs = model(input_ids=ids, attention_mask=mask).logits.float().softmax(-1)
                hidden[name] = {layer: resid[layer].float() for layer in layers}
            p_target[name] = probs[..., targets.to(probs.device)].sum(-1)
        weights = (p_target["tuned"] - p_target["base"]).clamp(min=0) * scored
        for layer in layers:
            total[layer] = total[layer] + torch.einsum(
                "bp,bpd->d", weights, hidden["tuned"][layer] - hidden["base"][layer]).cpu()
        weight_sum += float(weights.sum())
    return {layer: v / weight_sum if weight_sum > 0 else torch.zeros_like(v) for layer, v in total.items()}
