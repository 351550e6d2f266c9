"""Statistics of a fine-tune's neuron changes: contrasts of paired caches, minimum-effect and TOST
tests, FDR, classes, outliers, placebo and split-half replication, overlaps, HAC regression."""

from activations.lazy import lazy_exports

# Modules load on first use of one of their names (activations.lazy): the configs come without numpy.
__all__ = lazy_exports(__name__, {
    "interp.stats.classify": ("CHANGE_CLASSES", "classify_neurons"),
    "interp.stats.config": ("ClassifyConfig", "DiffConfig", "OutlierConfig", "RegressConfig"),
    "interp.stats.contrasts": ("Contrast", "DiffDesign", "Term", "change", "interaction", "scope_interaction", "within"),
    "interp.stats.designs": ("condition_contrast", "emoji_design", "model_change"),
    "interp.stats.diff": ("DiffResult", "diff_caches", "diff_inputs"),
    "interp.stats.equivalence": ("MinEffectResult", "min_effect_tests"),
    "interp.stats.interaction": ("interaction_2x2", "interaction_unpaired"),
    "interp.stats.loading": ("DiffInputs", "load_design_inputs"),
    "interp.stats.multiple": ("adjust_pvalues",),
    "interp.stats.outliers": ("find_outliers",),
    "interp.stats.overlap": ("OverlapResult", "overlap_masks", "overlap_sets"),
    "interp.stats.paired": ("TestResult", "paired_t", "two_sample_t", "wilcoxon_signed_rank"),
    "interp.stats.regress": ("RegressResult", "hac_regression", "regress", "regress_arrays"),
})
