"""The logit lens: a residual-stream vector read through the final norm and the unembedding.

``ReadOut.logits(h)`` is the exact lens of a hidden state, the model's own final norm and unembedding
(on the last block's output it gives the model's logits). A *difference* of residuals has no scale of its
own, and normalising it alone would make a tiny consistent change and a large one read the same. So a
difference ``d`` at a layer is read as the change of the normed residual it would cause at that layer's
typical scale ``r`` (the base residual's norm denominator there): ``W_U (gain * centre(d)) / r``, the norm
linearised at its typical input. This reading is linear in ``d``, so the score of a mean difference is the
mean of the texts' scores, which is what lets ``interp.discover.tokens`` test it against a sign-flip null.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from activations.sites import unwrap_model

_FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm",
                "model.final_layernorm", "transformer.norm_f")


def _find(root: nn.Module, dotted: str) -> nn.Module | None:
    module = root
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


@dataclass(frozen=True)
class ReadOut:
    """A model's final norm and unembedding (``read_out(model)``)."""

    norm: nn.Module
    unembed: nn.Module
    centred: bool
    """LayerNorm subtracts the mean before scaling; RMSNorm does not."""
    gain: Float[Tensor, " d_model"]
    """The norm's elementwise gain (Gemma's ``1 + weight``)."""
    eps: float

    def denominator(self, hidden: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        """What the final norm divides ``hidden`` by."""
        if self.centred:
            return torch.sqrt(hidden.var(-1, unbiased=False) + self.eps)
        return torch.sqrt(hidden.pow(2).mean(-1) + self.eps)

    @torch.no_grad()
    def logits(self, hidden: Float[Tensor, "... d_model"]) -> Float[Tensor, "... vocab"]:
        """The exact logit lens of hidden states (the model's own modules)."""
        return self.unembed(self.norm(hidden))

    @property
    def effective_unembedding(self) -> Float[Tensor, "vocab d_model"]:
        """The unembedding with the norm's gain folded in (float32)."""
        return self.unembed.weight.detach().float() * self.gain.float()

    @torch.no_grad()
    def difference_scores(self, diff: Float[Tensor, "... d_model"], scale: float | Tensor,
                          unembedding: Tensor | None = None) -> Float[Tensor, "... vocab"]:
        """The linearised lens of a residual difference at a layer of typical scale ``scale`` (module docstring)."""
        diff = diff.float()
        if self.centred:
            diff = diff - diff.mean(-1, keepdim=True)
        matrix = self.effective_unembedding if unembedding is None else unembedding
        return diff.to(matrix.device) @ matrix.T / scale


def read_out(model: nn.Module) -> ReadOut:
    """Find the final norm and the unembedding of ``model``."""
    bare = unwrap_model(model)
    norm = next((m for m in (_find(bare, path) for path in _FINAL_NORMS) if m is not None), None)
    unembed = bare.get_output_embeddings()
    if norm is None or getattr(norm, "weight", None) is None or unembed is None:
        raise ValueError(f"cannot find the final norm and unembedding of {type(bare).__name__} (looked for "
                         f"{', '.join(_FINAL_NORMS)} and get_output_embeddings()); add its final norm's path to "
                         "interp.discover.lens._FINAL_NORMS")
    centred = isinstance(norm, nn.LayerNorm) or getattr(norm, "bias", None) is not None
    weight = norm.weight.detach()
    gain = weight + 1 if type(norm).__name__.startswith("Gemma") else weight  # Gemma scales by (1 + weight)
    eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))
    return ReadOut(norm, unembed, centred, gain, eps)
