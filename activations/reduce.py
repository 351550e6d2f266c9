"""Per-prompt reductions of a batch's neuron vectors over token scopes, and its token statistics.

A reduction is a scope (which tokens) and a statistic:

  scope     tokens (``activations.roles.TokenRole``)
  all       every real token (the template included: kept for comparison, not for diffing)
  content   the prompt's own text: content, marked and control tokens; never position 0 or template
  marked    marked tokens only (e.g. the emojis, or the filler words of a length-matched twin)
  control   control tokens only (matched positions to compare the marks with)
  context   content tokens that are neither marked nor control (the words around the marks)

  statistic  mean | absmean (mean of |a|) | max | last (the prompt's last real token; scope all)

A prompt with no token in a scope (e.g. no marks) gets NaN for that reduction, and its token
count for the scope (``role_counts``) says so; readers treat such NaN as "not defined", never as
missing data. Padding is dropped by indexing, never multiplied by zero, so even a NaN there cannot
leak. Work is done in place on one float32 copy of the real tokens per layer, because on a CPU a
fresh large temporary per layer costs more than the arithmetic.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from activations.config import REDUCTIONS, SCOPES
from activations.roles import TokenRole
from activations.running import RunningStats, TokenStats, abs_histogram

PADDING = -1
"""Role value of padded positions."""


def scope_mask(roles: Int[Tensor, "..."], scope: str) -> Tensor:
    """Which tokens (roles of real tokens; padding never) belong to ``scope``."""
    if scope == "all":
        return roles >= 0
    if scope == "content":
        return roles >= int(TokenRole.CONTENT)
    if scope == "marked":
        return roles == int(TokenRole.MARKED)
    if scope == "control":
        return roles == int(TokenRole.CONTROL)
    if scope == "context":
        return roles == int(TokenRole.CONTENT)
    raise ValueError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")


class BatchResult(NamedTuple):
    """What one batch adds to a cache."""

    reductions: dict[str, np.ndarray]
    """name -> ``(batch, n_layers, d_mlp)`` float32 (NaN where a prompt has no token in the scope)."""
    role_counts: np.ndarray
    """``(batch, 4)`` int32: tokens per ``TokenRole`` of each prompt."""
    stats: TokenStats
    """The batch's token statistics."""
    token_acts: np.ndarray | None
    """``(n_real_tokens, n_layers, d_mlp)`` float16, when tokens are stored."""


def _segment_weights(owner: Tensor, member: Tensor, n_prompts: int) -> tuple[Tensor, Tensor]:
    """``(n_prompts, n_real)`` weights that average each prompt's member tokens, and member counts."""
    counts = torch.zeros(n_prompts, dtype=torch.float32, device=owner.device)
    counts.index_add_(0, owner, member.float())
    weights = torch.zeros(n_prompts, len(owner), device=owner.device)
    columns = torch.arange(len(owner), device=owner.device)
    weights[owner[member], columns[member]] = 1.0 / counts[owner[member]]
    return weights, counts


def reduce_batch(
    acts: dict[int, Float[Tensor, "batch pos d_mlp"]],
    roles: Int[Tensor, "batch pos"],
    layers: tuple[int, ...],
    reductions: tuple[str, ...],
    *,
    store_tokens: bool = False,
    histogram: bool = True,
) -> BatchResult:
    """Reductions, token statistics and (optionally) float16 token rows for one batch, layer by layer."""
    real_mask = roles >= 0
    n_prompts = roles.shape[0]
    owner = real_mask.nonzero()[:, 0]  # (n_real,) prompt of each real token, in (prompt, position) order
    real_roles = roles[real_mask]
    first = torch.ones_like(owner, dtype=torch.bool)
    first[1:] = owner[1:] != owner[:-1]  # each prompt's first real token: position 0 of its text
    last = torch.nonzero(torch.cat([first[1:], torch.ones(1, dtype=torch.bool, device=first.device)])).flatten()
    scopes = {scope for name in reductions for scope in (REDUCTIONS[name][0],)} | {"content"}
    members = {scope: scope_mask(real_roles, scope) for scope in scopes}
    weights = {scope: _segment_weights(owner, members[scope], n_prompts) for scope in scopes}
    role_counts = torch.stack([(roles == int(role)).sum(1) for role in TokenRole], 1)
    shape = (len(layers), next(iter(acts.values())).shape[-1])
    stats = TokenStats(shape, histogram=histogram)
    per_layer: dict[str, list[Tensor]] = {name: [] for name in reductions}
    tokens, means, m2s, c_means, c_m2s, hists = [], [], [], [], [], []
    content = members["content"]
    n_content = int(content.sum())
    for row, layer in enumerate(layers):
        real = acts[layer][real_mask].float()  # (n_real, d_mlp): a copy we own
        magnitude = real.abs()
        for name in reductions:
            scope, statistic = REDUCTIONS[name]
            weight, counts = weights[scope]
            if statistic == "mean":
                value = weight @ real
            elif statistic == "absmean":
                value = weight @ magnitude
            elif statistic == "max":
                chosen = members[scope]
                index = owner[chosen][:, None].expand(-1, real.shape[1])
                start = torch.full((n_prompts, real.shape[1]), -torch.inf, device=real.device)
                value = start.scatter_reduce_(0, index, real[chosen], "amax")
            else:  # last
                value = real[last]
            if statistic != "last":
                value = value.masked_fill((counts == 0)[:, None], float("nan"))
            per_layer[name].append(value)
        if store_tokens:
            tokens.append(real.half())
        stats.absmax_all[row] = magnitude.amax(0).double().cpu().numpy()
        if n_content:
            stats.absmax_content[row] = magnitude[content].amax(0).double().cpu().numpy()
            if histogram:
                hists.append(abs_histogram(real[content]))
        stats.pos0_abs_sum[row] = magnitude[first].sum(0).double().cpu().numpy()
        for chosen, mean_out, m2_out in ((None, means, m2s), (content, c_means, c_m2s)):
            rows = real if chosen is None else real[chosen]
            mean = rows.sum(0, dtype=torch.float64) / max(len(rows), 1)
            mean_out.append(mean)
            m2_out.append((rows - mean.float()).square_().sum(0).double())
    stats.all = RunningStats.from_moments(len(owner), torch.stack(means).cpu().numpy(), torch.stack(m2s).cpu().numpy())
    stats.content = RunningStats.from_moments(n_content, torch.stack(c_means).cpu().numpy(),
                                              torch.stack(c_m2s).cpu().numpy())
    stats.pos0_count = n_prompts
    if histogram and hists:
        stats.abs_hist = np.stack(hists)
    return BatchResult(
        {name: torch.stack(values, 1).cpu().numpy() for name, values in per_layer.items()},
        role_counts.cpu().numpy().astype(np.int32),
        stats,
        torch.stack(tokens, 1).cpu().numpy() if store_tokens else None,
    )
