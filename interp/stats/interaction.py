"""Model x prompt-set interactions by OLS, solved in closed form for every neuron at once.

The core question is whether the fine-tune changed a neuron *more on emoji texts than on their
emoji-free twins*. Each prompt pair i gives four observations y[i, model, text] (base/merged x
emoji/twin). In treatment coding the interaction coefficient is, for every design below,

    beta_int = mean_i [ (merged_marked - base_marked) - (merged_twin - base_twin) ]

because the design is balanced; the designs differ only in the error term behind its standard
error (``PromptEffects``):

1. ``"slopes"`` (default): y ~ C(prompt) * merged + C(prompt) * emoji + merged:emoji. Every prompt
   gets its own intercept, its own fine-tune effect and its own emoji effect, so the only residual
   left is the prompt x model x emoji term: the test equals a paired t test on the per-pair
   difference of differences (df = n - 1). It stays valid whatever the correlation between the
   four cells of a pair - and the cells are strongly correlated: base and merged see the same
   text, and a twin differs from its emoji text only by the emojis.
2. ``"intercept"``: y ~ C(prompt) + merged * emoji. Prompt intercepts only; the residual pools the
   prompt x model, prompt x emoji and three-way terms (df = 3(n - 1)). Exact only if the four cells
   of a pair are exchangeable after removing the prompt mean; when prompts differ in how much
   emojis move a neuron (they do), the pooled variance is inflated and power is lost.
3. ``"none"``: y ~ merged * emoji, four independent observations per pair (df = 4(n - 1)). Ignores
   the pairing; listed to compare with, not to use.

Against the ``neutral`` control the sets are not paired (different texts), so the comparison is a
model x set interaction with prompt intercepts, y ~ C(prompt) + merged + merged:emoji_set: each
prompt contributes its change c_i = merged_i - base_i, and the coefficient is
mean(c | emoji) - mean(c | neutral). With a common residual variance this OLS equals Student's
two-sample t on the changes (``equal_var=True``); by default Welch's test is used instead, because
a fine-tune that targets emoji texts plausibly changes their variance too.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from interp.stats.paired import TestResult, paired_t, t_test_from_moments, two_sample_t

PromptEffects = Literal["slopes", "intercept", "none"]
PROMPT_EFFECTS: tuple[str, ...] = get_args(PromptEffects)


def difference_of_differences(
    base_marked: np.ndarray, base_twin: np.ndarray, merged_marked: np.ndarray, merged_twin: np.ndarray
) -> np.ndarray:
    """Per-pair interaction contrast (n_pairs, n_neurons)."""
    return (merged_marked - base_marked) - (merged_twin - base_twin)


def interaction_2x2(
    base_marked: np.ndarray,
    base_twin: np.ndarray,
    merged_marked: np.ndarray,
    merged_twin: np.ndarray,
    prompt_effects: PromptEffects = "slopes",
) -> TestResult:
    """OLS test of the model x emoji interaction for every neuron; inputs are (n_pairs, n_neurons)
    with row i of all four arrays coming from the same prompt pair."""
    if prompt_effects not in PROMPT_EFFECTS:
        raise ValueError(f"prompt_effects must be one of {PROMPT_EFFECTS}, got {prompt_effects!r}")
    cells = [np.asarray(x, dtype=np.float64) for x in (base_marked, base_twin, merged_marked, merged_twin)]
    n = cells[0].shape[0]
    if any(c.shape != cells[0].shape for c in cells):
        raise ValueError(f"the four cells must have the same shape, got {[c.shape for c in cells]}")
    contrast = difference_of_differences(*cells)
    if prompt_effects == "slopes":
        return paired_t(contrast)
    if n < 2:
        raise ValueError(f"an interaction test needs at least 2 prompt pairs, got {n}")

    stacked = np.stack(cells)  # (4, n, m)
    residual = stacked - stacked.mean(axis=1, keepdims=True)  # remove the four cell means
    if prompt_effects == "intercept":
        # Two-way additive fit (prompt + cell): also remove each prompt's centred mean.
        residual -= residual.mean(axis=0, keepdims=True)
        df = 3 * (n - 1)
    else:
        df = 4 * (n - 1)
    sigma2 = (residual**2).sum(axis=(0, 1)) / df
    # Var(beta_int) = sigma^2 * sum(contrast weights^2) / n = 4 sigma^2 / n in a balanced design.
    return t_test_from_moments(contrast.mean(axis=0), np.sqrt(4.0 * sigma2 / n), df)


def interaction_unpaired(
    base_a: np.ndarray,
    merged_a: np.ndarray,
    base_b: np.ndarray,
    merged_b: np.ndarray,
    equal_var: bool = False,
) -> TestResult:
    """Test whether the fine-tune changed neurons more on set a (n_a, m) than on an unpaired set b
    (n_b, m): the model x set interaction with prompt intercepts (module docstring)."""
    if base_a.shape != merged_a.shape or base_b.shape != merged_b.shape:
        raise ValueError(
            f"base and merged activations of a set must have the same shape, got {base_a.shape} vs "
            f"{merged_a.shape} and {base_b.shape} vs {merged_b.shape}"
        )
    change_a = np.asarray(merged_a, dtype=np.float64) - base_a
    change_b = np.asarray(merged_b, dtype=np.float64) - base_b
    return two_sample_t(change_a, change_b, equal_var=equal_var)
