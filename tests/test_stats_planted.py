"""Planted emoji-specific neurons among template, position and general fine-tune effects: the design
must find them, keep the false discovery rate at alpha, and the placebo must stay empty, while the
old design (all-token means, emoji-removed twins) would flag the nuisance."""

from __future__ import annotations

import numpy as np
import pytest
from stats_helpers import simulate_study

from interp.stats import DiffConfig, diff_inputs, emoji_design, paired_t
from interp.stats.multiple import adjust_pvalues

N_DRAWS = 48
"""Simulated studies: enough that the mean false discovery proportion is known to about +-0.01."""
ALPHA = 0.05


DELTAS = (0.2, 0.0)


@pytest.fixture(scope="module")
def draws() -> dict[float, dict[str, np.ndarray]]:
    """Per delta: power, false discovery proportion, placebo share, and the old design's FDP."""
    rng = np.random.default_rng(7)
    out = {delta: {"power": [], "fdp": [], "placebo": [], "naive_fdp": []} for delta in DELTAS}
    design = emoji_design(writing=False)
    for _ in range(N_DRAWS):
        sim = simulate_study(rng)
        # The old design: all-token means of the emoji text and its shorter, emoji-removed twin.
        naive = (sim.naive["merged", "emoji"] - sim.naive["base", "emoji"]) \
            - (sim.naive["merged", "removed"] - sim.naive["base", "removed"])
        naive_called = adjust_pvalues(paired_t(naive.reshape(len(naive), -1)).p) < ALPHA
        naive_truth = np.isin(np.arange(naive_called.size), sim.planted)
        for delta in DELTAS:
            table = diff_inputs(sim.inputs, design, DiffConfig(delta=delta, alpha=ALPHA)).table
            flat = table["layer"].to_numpy() * sim.inputs.d_mlp + table["index"].to_numpy()
            truth = np.isin(flat, sim.planted)
            called = (table["call_emoji_reading"] == "changed").to_numpy()
            out[delta]["power"].append((called & truth).sum() / truth.sum())
            out[delta]["fdp"].append((called & ~truth).sum() / max(called.sum(), 1))
            out[delta]["placebo"].append((table["call_placebo"] == "changed").mean())
            out[delta]["naive_fdp"].append((naive_called & ~naive_truth).sum() / max(naive_called.sum(), 1))
    return {delta: {key: np.asarray(v) for key, v in values.items()} for delta, values in out.items()}


@pytest.fixture(scope="module")
def minimum_effect(draws) -> dict[str, np.ndarray]:
    return draws[0.2]


@pytest.fixture(scope="module")
def point_null(draws) -> dict[str, np.ndarray]:
    return draws[0.0]


def test_planted_neurons_are_found(minimum_effect):
    assert minimum_effect["power"].mean() > 0.8


def test_false_discovery_rate_is_at_most_alpha_despite_the_nuisance(minimum_effect, point_null):
    # With delta = 0 this is Benjamini-Hochberg's guarantee on the real nuisance structure; the
    # minimum-effect test is more conservative still.
    fdp = point_null["fdp"]
    standard_error = fdp.std(ddof=1) / np.sqrt(len(fdp))
    assert standard_error < 0.01  # the estimate resolves alpha: these draws can tell 0.05 from 0.08
    assert fdp.mean() <= ALPHA
    assert minimum_effect["fdp"].mean() <= fdp.mean() + 1e-12


def test_placebo_flags_at_most_one_percent(minimum_effect, point_null):
    assert minimum_effect["placebo"].mean() <= 0.01
    assert point_null["placebo"].mean() <= 0.01


def test_the_old_design_is_fooled_by_template_and_length(minimum_effect):
    # The nuisance is real: the all-token / removed-twin design calls many null neurons.
    assert minimum_effect["naive_fdp"].mean() > 0.5
