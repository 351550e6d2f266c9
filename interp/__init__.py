"""Find the MLP neurons a fine-tune changed and test whether they cause its new behaviour.

The notebook API (``interp.api``)::

    from interp import ablate, diff, load_model, record
    from interp import Behavior, find_causal_neurons, suppress
    from interp import discover          # what a fine-tune changed, without naming a behaviour
"""

__version__ = "0.1.0"

from activations.lazy import lazy_exports  # noqa: E402

# Modules load on first use of one of their names (activations.lazy), so ``interp --help`` needs no torch.
__all__ = [*lazy_exports(__name__, {
    "activations.behaviors": ("Behavior",),
    "activations.models": ("load_model",),
    "interp.causal.find": ("find_causal_neurons", "suppress"),
    "interp.api": ("diff", "record"),
    "interp.discover.pipeline": ("discover",),
    "interp.interventions": ("NeuronSet", "ablate", "patch", "scale"),
}), "__version__"]
