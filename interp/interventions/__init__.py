"""Interventions on MLP neurons: which neurons (``NeuronSet``), what to do to them (``ablate``,
``patch``, ``scale``), the values to use (``references``) and a weight-level export (``export``)."""

from interp.interventions.edits import ABLATION_MODES, AblationMode, ablate, patch, scale
from interp.interventions.export import (
    EXPORT_METHODS,
    ExportCheck,
    ExportResult,
    check_export,
    export_suppressed,
    fold_mean_ablation,
    revert_neurons,
    suppressed_model,
    zero_neuron_weights,
)
from interp.interventions.neuron_set import (
    Neuron,
    NeuronSet,
    flagged_set,
    layer_widths,
    ranked_neurons,
    read_neuron_table,
)
from interp.interventions.references import (
    ContentReference,
    content_reference,
    mean_activations,
    mean_reference_from_cache,
    record_neurons,
    token_pool,
)
from interp.interventions.stacked import STACKED_MODES, ablate_stacked, intervene_stacked

__all__ = [
    "ABLATION_MODES",
    "AblationMode",
    "ContentReference",
    "EXPORT_METHODS",
    "STACKED_MODES",
    "ExportCheck",
    "ExportResult",
    "Neuron",
    "NeuronSet",
    "ablate",
    "ablate_stacked",
    "check_export",
    "content_reference",
    "export_suppressed",
    "fold_mean_ablation",
    "intervene_stacked",
    "flagged_set",
    "layer_widths",
    "mean_activations",
    "mean_reference_from_cache",
    "patch",
    "ranked_neurons",
    "read_neuron_table",
    "record_neurons",
    "scale",
    "revert_neurons",
    "suppressed_model",
    "token_pool",
    "zero_neuron_weights",
]
