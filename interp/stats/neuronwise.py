"""Every per-neuron statistic of a diff, for one block of neurons at a time.

For each contrast of the design: its per-prompt values (rows where every term's scope has tokens),
the minimum-effect and TOST tests (``interp.stats.equivalence``) with delta = ``delta`` x the
neuron's token scale, and effect sizes: the raw estimate, the estimate in units of the neuron's
token scale (``_std``) and Cohen's d_z (mean / SD of the per-prompt values). For the contrasts that
flag neurons, the same tests on two random halves of the prompts (``_a`` / ``_b``) feed the
split-half replication check. Blocks are independent, so the caller bounds memory by block size;
everything that needs all neurons (multiple testing, classes, replication) happens later.
"""

from __future__ import annotations

import numpy as np

from interp.stats.contrasts import Contrast, DiffDesign
from interp.stats.equivalence import min_effect_tests
from interp.stats.loading import DiffInputs

CONTRAST_COLUMNS = ("", "_std", "d_", "se_", "p_", "p_equiv_")
"""Per contrast c: ``c`` (estimate), ``c_std``, ``d_c``, ``se_c``, ``p_c`` (minimum effect) and
``p_equiv_c`` (TOST); the diff adds ``q_c``, ``q_equiv_c`` and ``call_c``."""


def column(prefix: str, contrast: str) -> str:
    return f"{contrast}{prefix}" if prefix.startswith("_") or prefix == "" else f"{prefix}{contrast}"


def contrast_rows(inputs: DiffInputs, contrast: Contrast) -> np.ndarray:
    """Rows (prompts) where every term of ``contrast`` is defined."""
    masks = [inputs.defined[t.model, t.condition, t.reduction] for t in contrast.terms]
    return np.logical_and.reduce(masks)


def contrast_values(inputs: DiffInputs, contrast: Contrast, rows: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Per-prompt contrast values ``(n_rows, stop - start)`` float64 for neurons ``start:stop`` (flat)."""
    total = None
    for term in contrast.terms:
        cell = inputs.cells[term.model, term.condition, term.reduction]
        flat = cell.reshape(cell.shape[0], -1)[rows, start:stop].astype(np.float64)
        total = term.weight * flat if total is None else total + term.weight * flat
    return total


def halves(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``n_rows`` row positions into two halves (the first gets the odd one)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    cut = (n_rows + 1) // 2
    return np.sort(order[:cut]), np.sort(order[cut:])


def block_statistics(
    inputs: DiffInputs, design: DiffDesign, delta: float, start: int, stop: int, split_seed: int,
    rows: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Columns for neurons ``start:stop`` (flat layer-major index); ``rows`` from ``contrast_rows``."""
    columns: dict[str, np.ndarray] = {}
    for contrast in design.contrasts:
        scale = inputs.scales[contrast.scale].ravel()[start:stop].astype(np.float64)
        values = contrast_values(inputs, contrast, rows[contrast.name], start, stop)
        result = min_effect_tests(values, delta * scale)
        name = contrast.name
        sd = values.std(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            columns[name] = result.estimate
            columns[f"{name}_std"] = result.estimate / scale
            columns[f"d_{name}"] = np.where(sd > 0, result.estimate / sd, 0.0)
        columns[f"se_{name}"] = result.se
        columns[f"p_{name}"] = result.p_changed
        columns[f"p_equiv_{name}"] = result.p_equivalent
        if name in design.specific:
            half_a, half_b = halves(len(values), split_seed)
            first = min_effect_tests(values[half_a], delta * scale)
            with np.errstate(divide="ignore", invalid="ignore"):
                columns[f"{name}_std_a"] = first.estimate / scale
                columns[f"{name}_std_b"] = values[half_b].mean(axis=0) / scale
            columns[f"p_{name}_a"] = first.p_changed
    return columns
