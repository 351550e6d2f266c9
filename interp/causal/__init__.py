"""Causal experiments on a fine-tune's neurons: a necessity-direction screen checked by exact
patching, a sweep of rankings and interventions against matched random sets (teacher-forced proxy),
and an exported suppressor judged on sampled replies."""

from interp.causal.attribution import AttributionScores, attribution_scores, exact_effects, metric_gradients
from interp.causal.controls import MatchedSets, control_pool, matched_random_sets, strata, write_norms
from interp.causal.experiment import CausalResult, run_causal, suppress_and_judge
from interp.causal.find import CausalFindings, find_causal_neurons, suppress
from interp.causal.inputs import TokenBatch, chat_batch, reference_answer_batch, teacher_forced_batch, writing_batch
from interp.causal.proxy import ProxyResult, ProxySuite, build_proxy_suite, measure_sets
from interp.causal.screen import ScreenConfig, ScreenResult, screen
from interp.causal.setup import CausalContext, CausalSetup, causal_context, read_writing_replies
from interp.causal.suppression import SuppressionVerdict, VerdictCriteria, side_effects, suppression_verdict
from interp.causal.sweep import SweepConfig, SweepResult, sweep

__all__ = [
    "AttributionScores",
    "CausalContext",
    "CausalFindings",
    "CausalResult",
    "CausalSetup",
    "MatchedSets",
    "ProxyResult",
    "ProxySuite",
    "ScreenConfig",
    "ScreenResult",
    "SuppressionVerdict",
    "SweepConfig",
    "SweepResult",
    "TokenBatch",
    "VerdictCriteria",
    "attribution_scores",
    "build_proxy_suite",
    "causal_context",
    "chat_batch",
    "control_pool",
    "exact_effects",
    "find_causal_neurons",
    "reference_answer_batch",
    "matched_random_sets",
    "measure_sets",
    "metric_gradients",
    "read_writing_replies",
    "run_causal",
    "screen",
    "side_effects",
    "strata",
    "suppress",
    "suppress_and_judge",
    "suppression_verdict",
    "sweep",
    "teacher_forced_batch",
    "write_norms",
    "writing_batch",
]
