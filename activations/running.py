"""Streaming statistics over tokens: exact, mergeable, kept in float64 (or int64 counts).

Every statistic here has ``update(batch)`` and ``merge(other)``, so batches, resumed runs and shards
reduce to the same answer in any grouping (the pattern of baukit's ``runningstats``).

``RunningStats``   mean and M2 (Welford; Chan et al.'s parallel merge).
``TokenStats``     what a cache keeps per neuron over its prompts' tokens:
                   - Welford moments over all real tokens and over content tokens (template and
                     position 0 excluded; see ``activations.roles``);
                   - max |a| over all tokens and over content tokens, and the sum of |a| at
                     position 0: a massive-activation neuron has a huge |a| at position 0 and an
                     ordinary one elsewhere (``interp.stats.outliers``);
                   - a histogram of |a| over content tokens on a fixed log grid
                     (``ABS_HIST_EDGES``), from which the share of tokens above any threshold can
                     be read (firing rates for the ``activated`` class).

Counts are one integer for the whole array, or, with ``per_row``, an ``(n_rows, 1)`` array: the
rows of a mixture-of-experts capture are experts, and each expert's statistics count only the
tokens routed to it (``activations.experts``); a row with count 0 saw no token.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

ABS_HIST_EDGES = np.logspace(-5, 3, 49)
"""Bin edges of the |activation| histogram: 6 bins per decade from 1e-5 to 1e3; values below the
first edge fall in bin 0 and above the last in the final bin (50 bins in all)."""
N_ABS_BINS = len(ABS_HIST_EDGES) + 1


class RunningStats:
    """Mean and sum of squared deviations (M2) per element over a stream of samples.

    ``update(batch)`` folds in a batch whose first axis is samples; ``merge(other)`` combines two
    streams (Chan et al.'s parallel form of Welford's update), so shards or batches can be reduced
    in any grouping and give the same answer. All sums are kept in float64.
    """

    def __init__(self, shape: tuple[int, ...], per_row: bool = False) -> None:
        self.count: int | np.ndarray = np.zeros((shape[0], 1), dtype=np.int64) if per_row else 0
        self.mean = np.zeros(shape, dtype=np.float64)
        self.m2 = np.zeros(shape, dtype=np.float64)

    @classmethod
    def from_moments(cls, count: int | np.ndarray, mean: np.ndarray, m2: np.ndarray) -> RunningStats:
        """From counts (a scalar, or one per row of ``mean``), means and M2."""
        stats = cls(mean.shape)
        stats.count = int(count) if np.ndim(count) == 0 else np.asarray(count, np.int64).reshape(-1, 1)
        stats.mean, stats.m2 = np.asarray(mean, np.float64), np.asarray(m2, np.float64)
        return stats

    @classmethod
    def from_batch(cls, batch: Float[Tensor, "n ..."] | np.ndarray) -> RunningStats:
        """Exact moments of one batch (centred before squaring, so no catastrophic cancellation)."""
        samples = torch.as_tensor(batch).float()
        count = samples.shape[0]
        if count == 0:
            return cls(tuple(samples.shape[1:]))
        mean = samples.sum(0, dtype=torch.float64) / count
        m2 = (samples - mean.float()).square().sum(0, dtype=torch.float64)
        return cls.from_moments(count, mean.cpu().numpy(), m2.cpu().numpy())

    def update(self, batch: Float[Tensor, "n ..."] | np.ndarray) -> None:
        self.merge(RunningStats.from_batch(batch))

    def merge(self, other: RunningStats) -> None:
        if other.mean.shape != self.mean.shape:
            raise ValueError(f"cannot merge running stats of shape {other.mean.shape} into {self.mean.shape}")
        total = self.count + other.count
        if np.all(other.count == 0):
            return
        delta = other.mean - self.mean
        safe = np.maximum(total, 1)  # a row that neither side counted keeps mean 0, M2 0
        self.mean = self.mean + delta * (other.count / safe)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / safe)
        self.count = total

    @property
    def var(self) -> np.ndarray:
        """Sample variance (``m2 / (count - 1)``); NaN with fewer than two samples."""
        return np.where(self.count >= 2, self.m2 / np.maximum(np.asarray(self.count) - 1, 1), np.nan)

    @property
    def mean_square(self) -> np.ndarray:
        """E[a^2] = population variance + mean^2 (0 with no samples)."""
        return np.where(self.count > 0, self.m2 / np.maximum(self.count, 1) + self.mean**2, 0.0)


def abs_histogram(values: Float[Tensor, "n d"]) -> np.ndarray:
    """``(d, N_ABS_BINS)`` int64 counts of ``|values|`` per column on the ``ABS_HIST_EDGES`` grid."""
    n, d = values.shape
    if n == 0:
        return np.zeros((d, N_ABS_BINS), dtype=np.int64)
    edges = torch.as_tensor(ABS_HIST_EDGES, dtype=values.dtype, device=values.device)
    bins = torch.bucketize(values.abs(), edges)  # (n, d) in 0..len(edges)
    flat = bins * d + torch.arange(d, device=values.device)  # bin-major, so the reshape below is (bins, d)
    counts = torch.bincount(flat.flatten(), minlength=N_ABS_BINS * d)
    return counts.reshape(N_ABS_BINS, d).T.cpu().numpy().astype(np.int64)


def share_above(hist: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Share of counted values with |a| > ``threshold`` per row of ``hist`` (..., N_ABS_BINS).

    Within the bin that holds the threshold, values are taken as spread log-uniformly (so the answer
    is exact to within that bin's count); the open-ended first and last bins count as wholly below
    a threshold that falls inside them."""
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum(-1)
    threshold = np.broadcast_to(np.asarray(threshold, dtype=np.float64), hist.shape[:-1])
    with np.errstate(divide="ignore"):
        log_t = np.log10(np.maximum(threshold, 1e-300))
    log_edges = np.log10(ABS_HIST_EDGES)
    k = np.searchsorted(log_edges, log_t, side="right")  # threshold lies in bin k (between edges k-1 and k)
    above_bins = np.arange(N_ABS_BINS) > k[..., None]
    above = (hist * above_bins).sum(-1)
    inner = (k >= 1) & (k < len(ABS_HIST_EDGES))  # the open-ended first and last bins count as wholly below/above
    lo = log_edges[np.clip(k - 1, 0, len(log_edges) - 1)]
    hi = log_edges[np.clip(k, 0, len(log_edges) - 1)]
    fraction = np.where(inner, np.clip((hi - log_t) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0), 0.0)
    bin_count = np.take_along_axis(hist, np.clip(k, 0, N_ABS_BINS - 1)[..., None], -1)[..., 0]
    above = above + fraction * bin_count
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, above / total, np.nan)


class TokenStats:
    """Per-neuron token statistics of a cache (module docstring), shape ``(n_layers, d_mlp)``."""

    def __init__(self, shape: tuple[int, int], histogram: bool = True, per_row: bool = False) -> None:
        self.all = RunningStats(shape, per_row)
        self.content = RunningStats(shape, per_row)
        self.absmax_all = np.zeros(shape, dtype=np.float64)
        self.absmax_content = np.zeros(shape, dtype=np.float64)
        self.pos0_abs_sum = np.zeros(shape, dtype=np.float64)
        self.pos0_count: int | np.ndarray = np.zeros((shape[0], 1), dtype=np.int64) if per_row else 0
        self.abs_hist = np.zeros((*shape, N_ABS_BINS), dtype=np.int64) if histogram else None

    @property
    def per_row(self) -> bool:
        """Whether counts are per row (a capture with expert rows)."""
        return np.ndim(self.all.count) > 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.all.mean.shape  # type: ignore[return-value]

    def merge(self, other: TokenStats) -> None:
        self.all.merge(other.all)
        self.content.merge(other.content)
        self.absmax_all = np.maximum(self.absmax_all, other.absmax_all)
        self.absmax_content = np.maximum(self.absmax_content, other.absmax_content)
        self.pos0_abs_sum = self.pos0_abs_sum + other.pos0_abs_sum
        self.pos0_count += other.pos0_count
        if self.abs_hist is not None:
            if other.abs_hist is None:
                raise ValueError("cannot merge token stats without a histogram into stats with one")
            self.abs_hist = self.abs_hist + other.abs_hist

    @property
    def pos0_absmean(self) -> np.ndarray:
        """Mean |a| at each prompt's first token (NaN with no prompts)."""
        return np.where(self.pos0_count > 0, self.pos0_abs_sum / np.maximum(self.pos0_count, 1), np.nan)
