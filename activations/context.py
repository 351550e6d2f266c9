"""How many tokens a model reads at once, and the check that inputs fit it before any work.

A prompt longer than the context fails deep inside the model (GPT-2's position embedding raises
``IndexError: index out of range in self``) or, with rotary positions, runs on positions the model
never learned, slowly and without a word. Each stage that builds prompts checks them here first.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from activations.sites import unwrap_model


def context_length(model: nn.Module) -> int | None:
    """The longest input the model's position embeddings cover (None when the config does not say)."""
    config = getattr(unwrap_model(model), "config", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits_context(model: nn.Module, lengths: Sequence[int], what: str, fix: str) -> None:
    """Raise ``ValueError`` when any of ``lengths`` (tokens of ``what``, e.g. "a prompt with its new
    tokens") exceeds the model's context; the message counts them and ends with ``fix``."""
    limit = context_length(model)
    too_long = [n for n in lengths if limit is not None and n > limit]
    if too_long:
        raise ValueError(f"{len(too_long)} of {len(lengths)} inputs are longer than the model's context of {limit} "
                         f"tokens (longest: {max(too_long)} tokens for {what}); {fix}")
