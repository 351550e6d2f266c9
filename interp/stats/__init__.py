"""Statistics of a fine-tune's neuron changes: paired tests, interactions, FDR, classes, overlaps."""

from interp.stats.classify import CLASSES, ClassifyConfig, classify_neurons
from interp.stats.diff import DiffConfig, DiffResult, diff, diff_arrays
from interp.stats.interaction import interaction_2x2, interaction_unpaired
from interp.stats.loading import DiffInputs, load_diff_inputs
from interp.stats.multiple import adjust_pvalues
from interp.stats.overlap import OverlapResult, overlap_masks, overlap_sets
from interp.stats.paired import TestResult, paired_t, two_sample_t, wilcoxon_signed_rank
from interp.stats.regress import RegressConfig, RegressResult, hac_regression, regress, regress_arrays

__all__ = [
    "CLASSES",
    "ClassifyConfig",
    "DiffConfig",
    "DiffInputs",
    "DiffResult",
    "OverlapResult",
    "RegressConfig",
    "RegressResult",
    "TestResult",
    "adjust_pvalues",
    "classify_neurons",
    "diff",
    "diff_arrays",
    "hac_regression",
    "interaction_2x2",
    "interaction_unpaired",
    "load_diff_inputs",
    "overlap_masks",
    "overlap_sets",
    "paired_t",
    "regress",
    "regress_arrays",
    "two_sample_t",
    "wilcoxon_signed_rank",
]
