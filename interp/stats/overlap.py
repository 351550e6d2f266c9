"""Do two neuron sets overlap more than chance? Hypergeometric test.

If b neurons were drawn at random from a universe of N neurons of which a are in set A, the
overlap k would follow Hypergeometric(N, a, b). Enrichment p = P(X >= k), depletion p = P(X <= k);
``expected`` = a b / N is the overlap chance alone would give. (P(X >= k) equals the one-sided
Fisher exact test on the 2x2 membership table, which the tests use as an independent check.)
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class OverlapResult:
    """Overlap of two neuron sets within a universe."""

    name_a: str
    """Label of the first set."""
    name_b: str
    """Label of the second set."""
    n_universe: int
    """Neurons that could have been in either set."""
    n_a: int
    """Size of the first set."""
    n_b: int
    """Size of the second set."""
    n_overlap: int
    """Neurons in both."""
    expected: float
    """Overlap expected by chance, n_a n_b / n_universe."""
    fold_enrichment: float
    """n_overlap / expected (nan when expected is 0)."""
    p_enrichment: float
    """P(overlap >= observed) under random sets."""
    p_depletion: float
    """P(overlap <= observed) under random sets."""


def overlap_counts(
    n_universe: int, n_a: int, n_b: int, n_overlap: int, name_a: str = "a", name_b: str = "b"
) -> OverlapResult:
    """Hypergeometric test from the four counts."""
    if not 0 <= n_overlap <= min(n_a, n_b) or max(n_a, n_b) > n_universe:
        raise ValueError(
            f"inconsistent overlap counts: universe {n_universe}, sets {n_a} and {n_b}, overlap {n_overlap}"
        )
    expected = n_a * n_b / n_universe if n_universe else 0.0
    return OverlapResult(
        name_a=name_a,
        name_b=name_b,
        n_universe=n_universe,
        n_a=n_a,
        n_b=n_b,
        n_overlap=n_overlap,
        expected=expected,
        fold_enrichment=n_overlap / expected if expected > 0 else float("nan"),
        p_enrichment=float(stats.hypergeom.sf(n_overlap - 1, n_universe, n_a, n_b)),
        p_depletion=float(stats.hypergeom.cdf(n_overlap, n_universe, n_a, n_b)),
    )


def overlap_masks(a: np.ndarray, b: np.ndarray, name_a: str = "a", name_b: str = "b") -> OverlapResult:
    """Overlap of two boolean masks over the same universe of neurons."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"the two masks must cover the same neurons, got shapes {a.shape} and {b.shape}")
    return overlap_counts(a.size, int(a.sum()), int(b.sum()), int((a & b).sum()), name_a, name_b)


def overlap_sets(
    a: Collection[Hashable],
    b: Collection[Hashable],
    universe: Collection[Hashable],
    name_a: str = "a",
    name_b: str = "b",
) -> OverlapResult:
    """Overlap of two sets of neurons (e.g. ``(layer, index)`` tuples) drawn from ``universe``."""
    set_a, set_b, everything = set(a), set(b), set(universe)
    outside = (set_a | set_b) - everything
    if outside:
        example = sorted(outside, key=repr)[:3]
        raise ValueError(f"{len(outside)} neurons are not in the universe (e.g. {example}); pass the full universe")
    return overlap_counts(len(everything), len(set_a), len(set_b), len(set_a & set_b), name_a, name_b)


def pairwise_overlaps(flags: pd.DataFrame) -> list[OverlapResult]:
    """Overlap of every pair of bool columns of ``flags`` (e.g. class memberships)."""
    return [
        overlap_masks(flags[first].to_numpy(), flags[second].to_numpy(), first, second)
        for first, second in combinations(flags.columns, 2)
    ]
