"""The intervention names the command line offers, importable without torch (``interp suppress --help``)."""

EXPORT_METHODS: tuple[str, ...] = ("mean", "revert", "zero")
"""How ``export_suppressed`` writes suppressed neurons into the weights: fold mean ablation into the
output bias, restore the base model's weights, or zero them (``interp.interventions.export``)."""
