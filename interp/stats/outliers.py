"""Outlier neurons: massive activations and position-0 specialists, kept out of candidate sets.

Some MLP neurons produce activations orders of magnitude above their layer's (the "massive
activations" of Sun et al. 2024), typically at the first token, where they make it an attention
sink. Such a neuron is load-bearing for everything: zeroing SmolLM2's L11.N1229 (|a| ~ 3,000 at
position 0, < 0.05 elsewhere) alone raises neutral perplexity from 43 to 137. A raw-scale ranking
puts these neurons first, and ablating them "suppresses emojis" by breaking the model. So:

1. ``massive``: the neuron's max |a| over all tokens (template and position 0 included) is at
   least ``massive_factor`` times its layer's median max |a|.
2. ``pos0_only``: its mean |a| at position 0 is at least ``pos0_factor`` times its max |a| over
   every content token: it fires at position 0 and essentially nowhere else.

Both factors default to 100 (two orders of magnitude, the scale on which Sun et al. call an
activation massive); statistics come from every cache of the diff (both models, every condition).
The causal stages add a third, behavioural test on their shortlist: single-neuron ablation KL on
neutral chats (``interp.causal.screen``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from interp.stats.config import OutlierConfig


class Outliers(NamedTuple):
    """Per neuron, ``(n_layers, d_mlp)``."""

    massive: np.ndarray
    pos0_only: np.ndarray
    massive_ratio: np.ndarray
    """max |a| / layer median of max |a|."""
    pos0_ratio: np.ndarray
    """mean |a| at position 0 / max |a| over content tokens."""

    @property
    def any(self) -> np.ndarray:
        return self.massive | self.pos0_only


def find_outliers(stats: Iterable, config: OutlierConfig = OutlierConfig()) -> Outliers:
    """Steps 1-2 over ``activations.running.TokenStats`` of one or more caches."""
    stats = list(stats)
    if not stats:
        raise ValueError("outlier detection needs the token statistics of at least one cache")
    absmax = np.max([s.absmax_all for s in stats], axis=0)
    content_max = np.max([s.absmax_content for s in stats], axis=0)
    pos0 = np.max([np.nan_to_num(s.pos0_absmean) for s in stats], axis=0)
    median = np.median(absmax, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        massive_ratio = np.where(median > 0, absmax / median, 0.0)
        pos0_ratio = np.where(content_max > 0, pos0 / content_max, np.where(pos0 > 0, np.inf, 0.0))
    return Outliers(massive_ratio >= config.massive_factor, pos0_ratio >= config.pos0_factor, massive_ratio, pos0_ratio)
