"""Interventions on MLP neurons: which neurons (``NeuronSet``), what to do to them (``ablate``,
``patch``, ``scale``), additions while the model runs (``steering``), the values to use (``references``) and a weight-level export (``export``)."""

from activations.lazy import lazy_exports

# Modules load on first use of one of their names (activations.lazy), so the CLI starts without torch.
__all__ = lazy_exports(__name__, {
    "interp.interventions.config": ("EXPORT_METHODS",),
    "interp.interventions.edits": ("ABLATION_MODES", "AblationMode", "ablate", "patch", "scale"),
    "interp.interventions.export": ("ExportCheck", "ExportResult", "check_export", "export_suppressed",
                                    "fold_mean_ablation", "revert_neurons", "suppressed_model", "zero_neuron_weights"),
    "interp.interventions.neuron_set": ("Neuron", "NeuronSet", "flagged_set", "layer_widths", "ranked_neurons",
                                        "read_neuron_table"),
    "interp.interventions.references": ("ContentReference", "content_reference", "mean_activations",
                                        "mean_reference_from_cache", "record_neurons", "token_pool"),
    "interp.interventions.stacked": ("STACKED_MODES", "ablate_stacked", "intervene_stacked"),
    "interp.interventions.steering": ("output_vectors", "projected_out", "shifted", "steered"),
})
