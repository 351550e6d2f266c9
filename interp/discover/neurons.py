"""Which MLP neurons carry the promoted tokens: activation change and weight change, read by the lens.

A neuron j of layer l writes ``a_j * w_j`` into the residual stream (``w_j``: its output projection
column). Between the models that changes by ``a'_j w'_j - a_j w_j = (a'_j - a_j) w_j + a'_j (w'_j - w_j)``,
exactly. Averaged over the corpus (the same texts and positions as the residual difference):

1. *activation* term: the neuron's mean activation change times its base output column;
2. *weight* term: its mean tuned activation times the change of its output column.

Each term is read through the same linearised lens as the residual difference (``interp.discover.lens``,
at the read layer's scale), for every layer up to the read layer: a neuron's direct push on a token,
in the token's own score units. ``share`` is that push over the token's score (the whole residual
difference, attention and earlier layers included), so shares need not sum to one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from activations.sites import NeuronSite, neuron_sites
from interp.discover.lens import ReadOut
from interp.discover.tokens import TokenScore


@dataclass(frozen=True)
class NeuronContribution:
    """One neuron's direct push on one token (or on a set of tokens, summed)."""

    layer: int
    index: int
    token: str
    """The token's piece (``TokenScore.piece``), or ``"all"``: the summed push on every token that stands out."""
    activation: float
    """Activation change times the base output column, read by the lens (step 1)."""
    weight: float
    """Tuned activation times the change of the output column, read by the lens (step 2)."""
    share: float
    """(activation + weight) over the token's score."""

    @property
    def total(self) -> float:
        return self.activation + self.weight

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def output_columns(site: NeuronSite) -> Float[Tensor, "d_model d_mlp"]:
    """The output projection's weights as columns per neuron (GPT-2's Conv1D stores them transposed)."""
    weight = getattr(site.module, "weight", None)
    if not isinstance(weight, nn.Parameter) or not weight.dtype.is_floating_point:
        raise ValueError(f"{site.name}: output projection {type(site.module).__name__} has no plain float weight "
                         "(a LoRA or quantised layer); load the tuned model with its adapter merged")
    return (weight.T if type(site.module).__name__ == "Conv1D" else weight).detach().float()


@torch.no_grad()
def neuron_terms(base: nn.Module, tuned: nn.Module, readout: ReadOut, scale: float, tokens: list[int],
                 mean_base: Float[Tensor, "layer d_mlp"], mean_tuned: Float[Tensor, "layer d_mlp"], read_layer: int
                 ) -> tuple[Float[Tensor, "layer token d_mlp"], Float[Tensor, "layer token d_mlp"]]:
    """Activation and weight terms (steps 1-2) of every neuron in layers 0..read_layer for ``tokens``."""
    unembedding = readout.effective_unembedding[tokens]  # (token, d)
    activation, weight = [], []
    for base_site, tuned_site in zip(neuron_sites(base, list(range(read_layer + 1))),
                                     neuron_sites(tuned, list(range(read_layer + 1)))):
        before, after = output_columns(base_site), output_columns(tuned_site)
        layer = base_site.layer
        read_before = readout.difference_scores(before.T, scale, unembedding).T  # (token, d_mlp)
        read_change = readout.difference_scores((after - before).T, scale, unembedding).T
        delta = (mean_tuned[layer] - mean_base[layer]).to(read_before.device)
        activation.append(read_before * delta)
        weight.append(read_change * mean_tuned[layer].to(read_change.device))
    return torch.stack(activation).cpu(), torch.stack(weight).cpu()


def _pushing(totals: Tensor, top: int) -> Tensor:
    """Indices of the ``top`` largest positive totals (a neuron that does not push a token does not carry it)."""
    values, indices = totals.topk(min(top, totals.numel()))
    return indices[values > 0]


def carriers(activation: Tensor, weight: Tensor, tokens: list[TokenScore], top: int
             ) -> tuple[dict[str, list[NeuronContribution]], list[NeuronContribution]]:
    """Per token, the ``top`` neurons by total push; and the ``top`` neurons by push summed over the tokens
    (only neurons that push: none for tokens moved by attention or a bias alone)."""
    total = activation + weight  # (layer, token, d_mlp)
    d_mlp = total.shape[-1]

    def entry(flat: int, name: str, act: Tensor, wt: Tensor, score: float) -> NeuronContribution:
        layer, index = divmod(flat, d_mlp)
        a, w = float(act[layer, index]), float(wt[layer, index])
        # A share of a total the lens does not promote (zero or negative) would be meaningless: NaN.
        return NeuronContribution(layer, index, name, a, w, (a + w) / score if score > 0 else math.nan)

    per_token = {}
    for i, token in enumerate(tokens):
        flat_total = total[:, i, :].reshape(-1)
        per_token[token.piece] = [entry(int(f), token.piece, activation[:, i], weight[:, i], token.score)
                                  for f in _pushing(flat_total, top)]
    summed = total.sum(1).reshape(-1)
    score = sum(t.score for t in tokens)
    overall = [entry(int(f), "all", activation.sum(1), weight.sum(1), score) for f in _pushing(summed, top)]
    return per_token, overall
