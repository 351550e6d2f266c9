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

Rows in ``sparse`` are mixture-of-experts sites: their recordings are NaN at tokens the router did
not send to the expert (``activations.experts``), and every reduction and statistic of such a row is
over its routed tokens only (a prompt none of whose tokens in a scope reached the expert gets NaN,
``last`` is NaN when the last token did not reach it); ``routed_counts`` says how many did.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from collections.abc import Sequence

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
    routed_counts: np.ndarray | None = None
    """``(batch, n_layers, 4)`` int32 with ``sparse`` rows: per row, tokens per ``TokenRole`` it saw
    (all of them for a dense row, the routed ones for an expert)."""


def _segment_weights(owner: Tensor, member: Tensor, n_prompts: int) -> tuple[Tensor, Tensor]:
    """``(n_prompts, n_real)`` weights that average each prompt's member tokens, and member counts."""
    counts = torch.zeros(n_prompts, dtype=torch.float32, device=owner.device)
    counts.index_add_(0, owner, member.float())
    weights = torch.zeros(n_prompts, len(owner), device=owner.device)
    columns = torch.arange(len(owner), device=owner.device)
    weights[owner[member], columns[member]] = 1.0 / counts[owner[member]]
    return weights, counts


def reduce_batch(
    acts: dict[int | str, Float[Tensor, "batch pos d_mlp"]],
    roles: Int[Tensor, "batch pos"],
    layers: Sequence[int | str],
    reductions: tuple[str, ...],
    *,
    store_tokens: bool = False,
    histogram: bool = True,
    sparse: frozenset[int | str] = frozenset(),
) -> BatchResult:
    """Reductions, token statistics and (optionally) float16 token rows for one batch, row by row;
    ``layers`` are the keys of ``acts`` in row order, ``sparse`` those of expert rows (module docstring)."""
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
    stats = TokenStats(shape, histogram=histogram, per_row=bool(sparse))
    one_hot_roles = (real_roles[:, None] == torch.arange(len(TokenRole), device=roles.device)).long()
    routed_counts, counts_all, counts_content, pos0_counts = [], [], [], []
    dense = members, weights
    per_layer: dict[str, list[Tensor]] = {name: [] for name in reductions}
    tokens, means, m2s, c_means, c_m2s, hists = [], [], [], [], [], []
    for row, layer in enumerate(layers):
        real = acts[layer][real_mask].float()  # (n_real, d_mlp): a copy we own
        seen = None  # every real token, for a dense row
        members, weights = dense
        if layer in sparse:
            seen = ~real.isnan().all(-1)  # the tokens routed to this expert
            real.masked_fill_(~seen[:, None], 0.0)  # never read below, but 0 * NaN would leak through the weights
            members = {scope: member & seen for scope, member in members.items()}
            weights = {scope: _segment_weights(owner, members[scope], n_prompts) for scope in scopes}
        if sparse:
            chosen = torch.ones_like(first) if seen is None else seen
            routed_counts.append(torch.zeros((n_prompts, len(TokenRole)), dtype=torch.long, device=roles.device)
                                 .index_add_(0, owner[chosen], one_hot_roles[chosen]))
            counts_all.append(int(chosen.sum()))
            pos0_counts.append(int((first & chosen).sum()))
        content = members["content"]
        n_content = int(content.sum())
        counts_content.append(n_content)
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
                value = real[last] if seen is None else real[last].masked_fill(~seen[last][:, None], float("nan"))
            if statistic != "last":
                value = value.masked_fill((counts == 0)[:, None], float("nan"))
            per_layer[name].append(value)
        if store_tokens:
            tokens.append(real.half() if seen is None else real.half().masked_fill(~seen[:, None], float("nan")))
        if seen is None:
            stats.absmax_all[row] = magnitude.amax(0).double().cpu().numpy()
        elif bool(seen.any()):
            stats.absmax_all[row] = magnitude[seen].amax(0).double().cpu().numpy()
        if n_content:
            stats.absmax_content[row] = magnitude[content].amax(0).double().cpu().numpy()
        if histogram:
            hists.append(abs_histogram(real[content]))  # zeros where no content token
        stats.pos0_abs_sum[row] = magnitude[first if seen is None else first & seen].sum(0).double().cpu().numpy()
        for chosen, mean_out, m2_out in ((seen, means, m2s), (content, c_means, c_m2s)):
            rows = real if chosen is None else real[chosen]
            mean = rows.sum(0, dtype=torch.float64) / max(len(rows), 1)
            mean_out.append(mean)
            m2_out.append((rows - mean.float()).square_().sum(0).double())
    n_all, n_content = (len(owner), counts_content[0]) if not sparse else (np.array(counts_all),
                                                                           np.array(counts_content))
    stats.all = RunningStats.from_moments(n_all, torch.stack(means).cpu().numpy(), torch.stack(m2s).cpu().numpy())
    stats.content = RunningStats.from_moments(n_content, torch.stack(c_means).cpu().numpy(),
                                              torch.stack(c_m2s).cpu().numpy())
    stats.pos0_count = n_prompts if not sparse else np.array(pos0_counts, dtype=np.int64).reshape(-1, 1)
    if histogram:
        stats.abs_hist = np.stack(hists)
    return BatchResult(
        {name: torch.stack(values, 1).cpu().numpy() for name, values in per_layer.items()},
        role_counts.cpu().numpy().astype(np.int32),
        stats,
        torch.stack(tokens, 1).cpu().numpy() if store_tokens else None,
        torch.stack(routed_counts, 1).cpu().numpy().astype(np.int32) if sparse else None,
    )
