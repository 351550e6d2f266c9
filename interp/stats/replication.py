"""Split-half replication: do the top neurons chosen on one half of the prompts hold on the other?

For each contrast that flags neurons, the prompts are split at random into halves A and B
(``interp.stats.neuronwise.halves``). On A alone: minimum-effect p-values, corrected across neurons;
the neurons called changed on A (outliers excluded) are ranked by |standardised effect| on A, and
the top ``n`` are looked up on B, which played no part in choosing them. Reported: how many of them
have the same sign on B, and the correlation of their A and B effects. Selection and check use
disjoint prompts, so the agreement is not inflated by the selection (the winner's curse shrinks B's
effects, not their signs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from interp.stats.multiple import Correction, adjust_pvalues


@dataclass(frozen=True)
class SplitHalf:
    """Replication of one contrast's top neurons on the held-out half."""

    contrast: str
    n_flagged_a: int
    """Neurons called changed on half A (outliers excluded)."""
    n_top: int
    """Top neurons checked (at most the requested number)."""
    sign_agreement: float
    """Share of the top neurons whose effect on B has the sign it had on A (NaN with none)."""
    correlation: float
    """Pearson correlation of the top neurons' standardised effects on A and B."""


def split_half(table: pd.DataFrame, contrast: str, alpha: float, correction: Correction, n: int,
               exclude: np.ndarray | None = None) -> SplitHalf:
    """The check of the module docstring from the table's ``{c}_std_a``, ``{c}_std_b`` and ``p_{c}_a``."""
    q = adjust_pvalues(table[f"p_{contrast}_a"].to_numpy(), correction)
    called = q < alpha
    if exclude is not None:
        called &= ~exclude
    effect_a = table[f"{contrast}_std_a"].to_numpy()
    effect_b = table[f"{contrast}_std_b"].to_numpy()
    candidates = np.flatnonzero(called)
    top = candidates[np.argsort(-np.abs(effect_a[candidates]), kind="stable")[:n]]
    if len(top) == 0:
        return SplitHalf(contrast, 0, 0, float("nan"), float("nan"))
    agree = float(np.mean(np.sign(effect_a[top]) == np.sign(effect_b[top])))
    corr = float(np.corrcoef(effect_a[top], effect_b[top])[0, 1]) if len(top) > 2 else float("nan")
    return SplitHalf(contrast, int(called.sum()), int(len(top)), agree, corr)
