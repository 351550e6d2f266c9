"""Every per-neuron statistic of a diff, for one block of neurons at a time.

Inputs are the cells of the design as (n_prompts, n_neurons) arrays; outputs are named (n_neurons,)
columns of the neuron table. Blocks are independent, so the caller bounds memory by block size;
everything that needs all neurons at once (multiple testing, the quiet threshold) happens later.
"""

from __future__ import annotations

import numpy as np

from interp.stats.effects import cohens_d_paired, log2_fold_change, mean_abs
from interp.stats.interaction import PromptEffects, difference_of_differences, interaction_2x2, interaction_unpaired
from interp.stats.paired import TestResult, paired_t, wilcoxon_signed_rank

TESTS: dict[str, str] = {
    "change": "paired t test of merged - base on the emoji texts",
    "change_wilcoxon": "Wilcoxon signed-rank test of merged - base on the emoji texts",
    "selective_base": "paired t test of emoji - emoji-free twin in the base model",
    "selective_merged": "paired t test of emoji - emoji-free twin in the merged model",
    "interaction": "model x emoji interaction (emoji vs twin), OLS with prompt effects",
    "interaction_neutral": "model x set interaction, emoji vs neutral prompts (unpaired sets)",
}
"""Test name -> what it tests; each gives ``p_<name>`` and ``q_<name>`` columns."""

CELLS = ("base_emoji", "base_twin", "merged_emoji", "merged_twin", "base_neutral", "merged_neutral")


def paired_d(result: TestResult, n: int) -> np.ndarray:
    """Cohen's d_z from a paired t test: mean / sd = t / sqrt(n) (saves recomputing the sd)."""
    return result.statistic / np.sqrt(n)


def block_statistics(
    cells: dict[str, np.ndarray],
    *,
    prompt_effects: PromptEffects,
    neutral_equal_var: bool,
    log2fc_epsilon: float,
) -> dict[str, np.ndarray]:
    """Cell means, effect sizes and p-values for one block; ``cells`` maps the names in ``CELLS``
    (the neutral pair optional) to float64 (n_prompts, n_neurons) arrays."""
    base_e, base_t = cells["base_emoji"], cells["base_twin"]
    merged_e, merged_t = cells["merged_emoji"], cells["merged_twin"]
    columns: dict[str, np.ndarray] = {f"mean_{name}": cells[name].mean(axis=0) for name in CELLS if name in cells}
    columns["abs_base_emoji"] = mean_abs(base_e)
    columns["abs_merged_emoji"] = mean_abs(merged_e)

    n = base_e.shape[0]
    change = merged_e - base_e
    change_t = paired_t(change)
    change_w = wilcoxon_signed_rank(change)
    columns["change"] = change_t.estimate
    columns["d_change"] = paired_d(change_t, n)
    columns["log2fc_abs"] = log2_fold_change(columns["abs_merged_emoji"], columns["abs_base_emoji"], log2fc_epsilon)
    columns["t_change"], columns["p_change"] = change_t.statistic, change_t.p
    columns["z_change_wilcoxon"], columns["p_change_wilcoxon"] = change_w.statistic, change_w.p

    for model, emoji, twin in (("base", base_e, base_t), ("merged", merged_e, merged_t)):
        selective = paired_t(emoji - twin)
        columns[f"selectivity_{model}"] = selective.estimate
        columns[f"d_selective_{model}"] = paired_d(selective, n)
        columns[f"t_selective_{model}"], columns[f"p_selective_{model}"] = selective.statistic, selective.p

    interaction = interaction_2x2(base_e, base_t, merged_e, merged_t, prompt_effects)
    columns["interaction"] = interaction.estimate
    columns["d_interaction"] = (
        paired_d(interaction, n) if prompt_effects == "slopes"  # that test is the paired t on the contrast
        else cohens_d_paired(difference_of_differences(base_e, base_t, merged_e, merged_t))
    )
    columns["t_interaction"], columns["p_interaction"] = interaction.statistic, interaction.p

    if "base_neutral" in cells:
        control = interaction_unpaired(base_e, merged_e, cells["base_neutral"], cells["merged_neutral"],
                                       equal_var=neutral_equal_var)
        columns["interaction_neutral"] = control.estimate
        columns["t_interaction_neutral"], columns["p_interaction_neutral"] = control.statistic, control.p
    return columns
