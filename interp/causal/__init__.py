"""Causal experiments on a fine-tune's neurons: a necessity-direction screen checked by exact
patching, a sweep of rankings and interventions against matched random sets (teacher-forced proxy),
and an exported suppressor judged on sampled replies."""

from activations.lazy import lazy_exports

# Modules load on first use of one of their names (activations.lazy): the configs come without torch.
__all__ = lazy_exports(__name__, {
    "interp.causal.attribution": ("AttributionScores", "attribution_scores", "exact_effects", "metric_gradients"),
    "interp.causal.config": ("CausalSetup", "ScreenConfig", "SweepConfig"),
    "interp.causal.controls": ("MatchedSets", "control_pool", "matched_random_sets", "strata", "write_norms"),
    "interp.causal.experiment": ("CausalResult", "run_causal", "suppress_and_judge"),
    "interp.causal.find": ("CausalFindings", "find_causal_neurons", "suppress"),
    "interp.causal.inputs": ("TokenBatch", "chat_batch", "reference_answer_batch", "teacher_forced_batch",
                             "writing_batch"),
    "interp.causal.proxy": ("ProxyResult", "ProxySuite", "build_proxy_suite", "measure_sets"),
    "interp.causal.screen": ("ScreenResult", "screen"),
    "interp.causal.setup": ("CausalContext", "causal_context", "read_writing_replies"),
    "interp.causal.suppression": ("SuppressionVerdict", "VerdictCriteria", "side_effects", "suppression_verdict"),
    "interp.causal.sweep": ("SweepResult", "sweep"),
})
