"""The tokens a neuron's output weights promote and demote: its direct logit effect.

A neuron's output column ``w`` (what one unit of its activation adds to the residual stream) is read
through the final norm's gain and the unembedding, ``W_U (g * w)`` (for a LayerNorm, ``w`` is
centred first, as the norm would centre it). The norm's division by the residual's scale depends on
the context, so these are effects per unit of that scale: their ranking is exact, their size relative.
The fine-tune's change is the same product for the tuned weights minus the base's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from activations.sites import neuron_sites, unwrap_model
from interp.pages.data import LogitEffects, TokenEffect

FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm",
               "model.decoder.final_layer_norm", "model.language_model.norm")
"""Where known architectures keep the norm before the unembedding."""


def final_norm(model: nn.Module) -> nn.Module:
    bare = unwrap_model(model)
    for name in FINAL_NORMS:
        try:
            return bare.get_submodule(name)
        except AttributeError:
            continue
    raise ValueError(f"cannot find the final norm of {type(bare).__name__} (tried {', '.join(FINAL_NORMS)}); "
                     "add its module path to interp.pages.logits.FINAL_NORMS")


def output_columns(model: nn.Module, neurons: Sequence[tuple[int, int]]) -> Tensor:
    """``(hidden, n_neurons)`` float32: each neuron's output weights, read from its site's projection."""
    sites = {site.layer: site for site in neuron_sites(model, sorted({layer for layer, _ in neurons}))}
    columns = []
    for layer, index in neurons:
        weight = sites[layer].module.weight.detach()
        # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out).
        column = weight[index, :] if type(sites[layer].module).__name__ == "Conv1D" else weight[:, index]
        columns.append(column.float().cpu())
    return torch.stack(columns, dim=1)


def direct_logits(model: nn.Module, columns: Tensor) -> Tensor:
    """``(vocab, n)``: ``W_U (g * w)`` for each column ``w`` (centred first under a LayerNorm)."""
    norm = final_norm(model)
    if isinstance(norm, nn.LayerNorm):
        columns = columns - columns.mean(0, keepdim=True)
    gain = getattr(norm, "weight", None)
    if gain is not None:
        columns = columns * gain.detach().float().cpu()[:, None]
    unembed = unwrap_model(model).get_output_embeddings().weight.detach().float().cpu()
    return unembed @ columns


def _top(tokenizer: PreTrainedTokenizerBase, values: Tensor, k: int, largest: bool) -> list[TokenEffect]:
    found = torch.topk(values, k, largest=largest)
    return [TokenEffect(tokenizer.decode([int(i)]), round(float(v), 5)) for v, i in zip(found.values, found.indices)]


def logit_effects(base: nn.Module, tuned: nn.Module, tokenizer: PreTrainedTokenizerBase,
                  neurons: Sequence[tuple[int, int]], k: int = 10) -> list[LogitEffects]:
    """Each neuron's promoted and demoted tokens in both models, and the tokens the fine-tune moved most."""
    if not neurons:
        return []
    w_base, w_tuned = output_columns(base, neurons), output_columns(tuned, neurons)
    l_base, l_tuned = direct_logits(base, w_base), direct_logits(tuned, w_tuned)
    k = min(k, l_base.shape[0])
    change = (w_tuned - w_base).norm(dim=0) / w_base.norm(dim=0).clamp_min(1e-12)
    out = []
    for i in range(len(neurons)):
        moved = l_tuned[:, i] - l_base[:, i]
        out.append(LogitEffects(
            _top(tokenizer, l_base[:, i], k, True), _top(tokenizer, l_base[:, i], k, False),
            _top(tokenizer, l_tuned[:, i], k, True), _top(tokenizer, l_tuned[:, i], k, False),
            _top(tokenizer, moved, k, True), _top(tokenizer, moved, k, False), round(float(change[i]), 6)))
    return out
