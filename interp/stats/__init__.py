"""Statistics of a fine-tune's neuron changes: contrasts of paired caches, minimum-effect and TOST
tests, FDR, classes, outliers, placebo and split-half replication, overlaps, HAC regression."""

from interp.stats.classify import CHANGE_CLASSES, ClassifyConfig, classify_neurons
from interp.stats.contrasts import Contrast, DiffDesign, Term, change, interaction, scope_interaction, within
from interp.stats.designs import condition_contrast, emoji_design, model_change
from interp.stats.diff import DiffConfig, DiffResult, diff, diff_inputs
from interp.stats.equivalence import MinEffectResult, min_effect_tests
from interp.stats.interaction import interaction_2x2, interaction_unpaired
from interp.stats.loading import DiffInputs, load_design_inputs
from interp.stats.multiple import adjust_pvalues
from interp.stats.outliers import OutlierConfig, find_outliers
from interp.stats.overlap import OverlapResult, overlap_masks, overlap_sets
from interp.stats.paired import TestResult, paired_t, two_sample_t, wilcoxon_signed_rank
from interp.stats.regress import RegressConfig, RegressResult, hac_regression, regress, regress_arrays

__all__ = [
    "CHANGE_CLASSES",
    "ClassifyConfig",
    "Contrast",
    "DiffConfig",
    "DiffDesign",
    "DiffInputs",
    "DiffResult",
    "MinEffectResult",
    "OutlierConfig",
    "OverlapResult",
    "RegressConfig",
    "RegressResult",
    "Term",
    "TestResult",
    "adjust_pvalues",
    "change",
    "classify_neurons",
    "condition_contrast",
    "diff",
    "diff_inputs",
    "emoji_design",
    "find_outliers",
    "hac_regression",
    "interaction",
    "interaction_2x2",
    "interaction_unpaired",
    "load_design_inputs",
    "min_effect_tests",
    "model_change",
    "overlap_masks",
    "overlap_sets",
    "paired_t",
    "regress",
    "regress_arrays",
    "scope_interaction",
    "two_sample_t",
    "wilcoxon_signed_rank",
    "within",
]
