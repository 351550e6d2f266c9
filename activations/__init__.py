"""Record what every MLP neuron of a model does: model loading, neuron sites, hooks, capture, store."""

from activations.lazy import lazy_exports

# Modules load on first use of one of their names (activations.lazy), so the CLI starts without torch.
__all__ = lazy_exports(__name__, {
    "activations.config": ("DEFAULT_MODEL",),
    "activations.models": ("LoadedModel", "ModelSpecError", "load_model", "weights_fingerprint"),
    "activations.sites": ("NeuronSite", "UnsupportedArchitectureError", "neuron_inventory", "neuron_sites"),
})
