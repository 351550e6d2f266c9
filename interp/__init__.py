"""Find the MLP neurons a fine-tune changed and test whether they cause its new behaviour."""

__version__ = "0.1.0"
