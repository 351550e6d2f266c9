"""How large the mean residual difference is after each layer, with a text-bootstrap interval on its norm.

The norm is compared with the base residual's own size there (``relative``: ||mean diff|| over
``scale * sqrt(d_model)``, the typical residual norm), so layers whose residual grows with depth compare
fairly; the read layer defaults to the largest relative difference of the chosen position set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class LayerDifference:
    """The mean tuned-minus-base residual after one layer, over one position set."""

    layer: int
    positions: str
    """``first`` (the first k positions of each text) or ``all``."""
    norm: float
    """||mean over texts of the difference||."""
    low: float
    high: float
    """95% percentile interval of the norm over texts resampled with replacement."""
    relative: float
    """The norm over the base residual's typical norm at this layer."""
    top_tokens: tuple[str, ...] = ()
    """The few tokens this layer's difference promotes most (the lens, for a glance across layers)."""

    def to_dict(self) -> dict:
        return asdict(self)


def layer_differences(per_text: Float[Tensor, "text layer d_model"], scale: Float[Tensor, " layer"], positions: str,
                      draws: int, generator: torch.Generator) -> list[LayerDifference]:
    """One ``LayerDifference`` per layer (tokens filled in by the caller)."""
    n, _, d_model = per_text.shape
    mean = per_text.mean(0)  # (layer, d)
    # Resampling texts with replacement = weighting them by multinomial counts.
    counts = torch.stack([torch.bincount(torch.randint(0, n, (n,), generator=generator), minlength=n)
                          for _ in range(draws)]).float() / n  # (draw, text)
    boot = torch.einsum("bt,tld->bld", counts, per_text).norm(dim=-1)  # (draw, layer)
    low, high = torch.quantile(boot, torch.tensor([0.025, 0.975]), dim=0)
    norms = mean.norm(dim=-1)
    relative = norms / (scale * d_model ** 0.5)
    return [LayerDifference(layer, positions, float(norms[layer]), float(low[layer]), float(high[layer]),
                            float(relative[layer])) for layer in range(mean.shape[0])]


def best_layer(differences: list[LayerDifference]) -> int:
    """The layer whose mean difference is largest relative to the base residual there."""
    return max(differences, key=lambda d: d.relative).layer
