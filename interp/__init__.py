"""Find the MLP neurons a fine-tune changed and test whether they cause its new behaviour.

The notebook API (``interp.api``)::

    from interp import ablate, diff, load_model, record
"""

__version__ = "0.1.0"

from activations.models import load_model  # noqa: E402
from interp.api import diff, record  # noqa: E402
from interp.interventions import NeuronSet, ablate, patch, scale  # noqa: E402

__all__ = ["NeuronSet", "ablate", "diff", "load_model", "patch", "record", "scale", "__version__"]
