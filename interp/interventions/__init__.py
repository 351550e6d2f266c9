"""Interventions on MLP neurons: which neurons (``NeuronSet``), what to do to them (``ablate``,
``patch``, ``scale``), the values to use (``references``) and a weight-level export (``export``)."""

from interp.interventions.edits import ABLATION_MODES, AblationMode, ablate, patch, scale
from interp.interventions.export import (
    ExportCheck,
    ExportResult,
    check_export,
    export_and_check,
    export_suppressed,
    suppressed_copy,
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
from interp.interventions.references import mean_activations, mean_reference_from_cache, record_neurons, token_pool
from interp.interventions.stacked import ablate_stacked

__all__ = [
    "ABLATION_MODES",
    "AblationMode",
    "ExportCheck",
    "ExportResult",
    "Neuron",
    "NeuronSet",
    "ablate",
    "ablate_stacked",
    "check_export",
    "export_and_check",
    "export_suppressed",
    "flagged_set",
    "layer_widths",
    "mean_activations",
    "mean_reference_from_cache",
    "patch",
    "ranked_neurons",
    "read_neuron_table",
    "record_neurons",
    "scale",
    "suppressed_copy",
    "token_pool",
    "zero_neuron_weights",
]
