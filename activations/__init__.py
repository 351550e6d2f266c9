"""Record what every MLP neuron of a model does: model loading, neuron sites, hooks, capture, store."""

from activations.models import DEFAULT_MODEL, LoadedModel, ModelSpecError, load_model, weights_fingerprint
from activations.sites import NeuronSite, UnsupportedArchitectureError, neuron_inventory, neuron_sites

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelSpecError",
    "NeuronSite",
    "UnsupportedArchitectureError",
    "load_model",
    "neuron_inventory",
    "neuron_sites",
    "weights_fingerprint",
]
