"""Causal experiments on flagged neurons: dose-response with matched random controls, cross-model
patching (sufficiency / necessity), side effects, and attribution patching as a screen."""

from interp.causal.attribution import (
    AttributionCheck,
    AttributionConfig,
    AttributionResult,
    AttributionScores,
    attribution_patching,
    attribution_scores,
    check_attribution,
    exact_effects,
)
from interp.causal.dose_response import DoseResponseConfig, DoseResponseResult, dose_response
from interp.causal.evaluate import Clean, CrossPatch, EvalSuite, Hooked, Measurement, Stacked, measure, measure_stacked
from interp.causal.generation import GenerationConfig, generate_cross_patched, generate_replies, generate_stacked
from interp.causal.inputs import QuestionSet, TokenBatch, load_neutral, load_questions, teacher_forced_batch, text_batch
from interp.causal.patching import PatchingConfig, PatchingResult, patching_experiment
from interp.causal.suite import emoji_suite

__all__ = [
    "AttributionCheck",
    "AttributionConfig",
    "AttributionResult",
    "AttributionScores",
    "Clean",
    "CrossPatch",
    "DoseResponseConfig",
    "DoseResponseResult",
    "EvalSuite",
    "GenerationConfig",
    "Hooked",
    "Measurement",
    "PatchingConfig",
    "PatchingResult",
    "QuestionSet",
    "Stacked",
    "TokenBatch",
    "attribution_patching",
    "attribution_scores",
    "check_attribution",
    "dose_response",
    "emoji_suite",
    "exact_effects",
    "generate_cross_patched",
    "generate_replies",
    "generate_stacked",
    "load_neutral",
    "load_questions",
    "measure",
    "measure_stacked",
    "patching_experiment",
    "teacher_forced_batch",
    "text_batch",
]
