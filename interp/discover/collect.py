"""Both models read the same generic texts; what each layer's residual stream and neurons hold, per text.

1. Texts are tokenised as raw text (no chat template: the difference a fine-tune leaves on *any* text),
   cut to ``max_length`` tokens and right-padded, so every real position keeps its own position id.
2. A forward hook on every decoder block (``block_outputs``, a context manager) keeps the block's
   output, the residual stream after that layer; ``activations.hooks.recording`` keeps the neuron vectors.
3. Attention sinks are left out: a position whose base residual norm, at any layer, exceeds
   ``sink_ratio`` times that layer's median over the batch's real positions (Sun et al. 2024's massive
   activations; on SmolLM2 the first position of every text, about 160 times the median from layer 11 on).
   Its difference is outsized (a norm of 225 against 11 elsewhere on the emoji fine-tune) and carries no
   token information, so it would swamp every mean. Both models use the base model's sink mask.
4. Per text, the residual and the neurons are averaged over two position sets: the first k positions
   that are not sinks (``first``) and every such position (``all``). The residual's tuned-minus-base
   difference is kept per text (the statistics resample texts); the neurons' means are summed over texts
   (only their mean is read).
5. The base residual's typical scale per layer (the final norm's denominator over the positions that are
   not sinks) lets the lens read a difference as a change of the normed residual (``interp.discover.lens``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from activations.hooks import recording
from activations.sites import decoder_blocks, neuron_sites
from interp.discover.lens import ReadOut

POSITION_SETS = ("first", "all")


@dataclass(frozen=True)
class Collected:
    """What the two models hold on the corpus (module docstring)."""

    residual_diff: dict[str, Float[Tensor, "text layer d_model"]]
    """Per position set: each text's mean tuned-minus-base residual after each layer."""
    base_scale: Float[Tensor, " layer"]
    """The base residual's typical final-norm denominator after each layer."""
    neuron_base: dict[str, Float[Tensor, "layer d_mlp"]]
    """Per position set: the base model's neuron means, averaged over texts."""
    neuron_tuned: dict[str, Float[Tensor, "layer d_mlp"]]
    """The same for the tuned model."""
    n_tokens: int
    """Real tokens read per model."""
    n_sinks: int
    """Positions left out as attention sinks (step 3)."""

    @property
    def n_texts(self) -> int:
        return int(self.residual_diff["all"].shape[0])


@contextmanager
def block_outputs(model: nn.Module) -> Iterator[dict[int, Tensor]]:
    """Yield a dict that holds, after each forward pass, every decoder block's output hidden states."""
    latest: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(module, args, output):
            latest[layer] = (output[0] if isinstance(output, tuple) else output).detach()

        return hook

    handles = [block.register_forward_hook(keep(layer)) for layer, block in enumerate(decoder_blocks(model))]
    try:
        yield latest
    finally:
        for handle in handles:
            handle.remove()


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Each text's token ids (raw text, the tokenizer's own special tokens), cut to ``max_length``."""
    ids = [tokenizer(text, add_special_tokens=True).input_ids[:max_length] for text in texts]
    empty = [i for i, row in enumerate(ids) if not row]
    if empty:
        raise ValueError(f"corpus texts {empty[:5]} tokenise to nothing; remove the empty lines")
    return ids


def _batch(rows: list[list[int]], pad: int, device: torch.device) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _sinks(resid: dict[int, Tensor], mask: Tensor, ratio: float) -> Tensor:
    """``(text, pos)`` True where the residual norm exceeds ``ratio`` x the layer's median at any layer."""
    real = mask.bool()
    sink = torch.zeros_like(real)
    if ratio <= 0:
        return sink
    for hidden in resid.values():
        norms = hidden.float().norm(dim=-1)
        sink |= norms > ratio * norms[real].median()
    return sink & real


def _weights(mask: Tensor, sink: Tensor, first_k: int) -> dict[str, Tensor]:
    kept = mask.bool() & ~sink
    rank = kept.long().cumsum(1)  # 1 at the first kept position
    weights = {"all": kept.float(), "first": (kept & (rank <= first_k)).float()}
    empty = (weights["all"].sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{len(empty)} corpus text(s) hold no position outside the attention sinks (the first is "
                         f"batch row {empty[0]}): use texts of at least two tokens, or a larger sink_ratio")
    return weights


@torch.no_grad()
def _read(model: nn.Module, ids: Tensor, mask: Tensor, first_k: int, sink_ratio: float, readout: ReadOut | None,
          sink: Tensor | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor | None, Tensor]:
    """One batch: per-text residual means (text, layer, d), neuron means (layer, d_mlp) summed over texts,
    the summed final-norm denominators (layer,) over positions that are not sinks (base model only), and
    the sink mask (found here unless given: the tuned model uses the base model's)."""
    sites = neuron_sites(model)
    if any(site.expert is not None for site in sites):
        raise ValueError("discovery reads dense MLP neurons; this model routes tokens to experts, whose neurons "
                         "only some tokens reach: pass a dense model")
    with block_outputs(model) as resid, recording(sites) as neurons:
        model(input_ids=ids, attention_mask=mask, logits_to_keep=1)  # the lens reads hidden states, not logits
        if sink is None:
            sink = _sinks(resid, mask, sink_ratio)
        weights = _weights(mask, sink, first_k)
        residual, neuron = {}, {}
        for name, w in weights.items():
            per_text = w / w.sum(1, keepdim=True)  # (text, pos)
            residual[name] = torch.stack([torch.einsum("bp,bpd->bd", per_text, resid[layer].float())
                                          for layer in range(len(resid))], 1)
            neuron[name] = torch.stack([torch.einsum("bp,bpn->n", per_text, neurons[site.key].float())
                                        for site in sites])
        scale = None
        if readout is not None:
            scale = torch.stack([(readout.denominator(resid[layer].float()) * weights["all"]).sum()
                                 for layer in range(len(resid))])
    return residual, neuron, scale, sink


def collect(base: nn.Module, tuned: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *,
            first_k: int, max_length: int, batch_size: int, readout: ReadOut, sink_ratio: float) -> Collected:
    """Run both models over ``texts`` (module docstring)."""
    rows = encode(tokenizer, texts, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(base.parameters()).device
    diffs: dict[str, list[Tensor]] = {name: [] for name in POSITION_SETS}
    sums = {role: {name: 0.0 for name in POSITION_SETS} for role in ("base", "tuned")}
    scale_sum, scale_count, n_sinks = 0.0, 0, 0
    for start in tqdm(range(0, len(rows), batch_size), desc="discover", unit="batch", leave=False):
        chunk = rows[start : start + batch_size]
        ids, mask = _batch(chunk, pad, device)
        base_resid, base_neurons, scale, sink = _read(base, ids, mask, first_k, sink_ratio, readout)
        tuned_resid, tuned_neurons, _, _ = _read(tuned, ids, mask, first_k, sink_ratio, None, sink)
        for name in POSITION_SETS:
            diffs[name].append((tuned_resid[name] - base_resid[name]).cpu())
            sums["base"][name] = sums["base"][name] + base_neurons[name].cpu()
            sums["tuned"][name] = sums["tuned"][name] + tuned_neurons[name].cpu()
        scale_sum = scale_sum + scale.cpu()
        n_sinks += int(sink.sum())
        scale_count += int(mask.sum()) - int(sink.sum())
    n = len(rows)
    return Collected({name: torch.cat(diffs[name]) for name in POSITION_SETS}, scale_sum / scale_count,
                     {name: sums["base"][name] / n for name in POSITION_SETS},
                     {name: sums["tuned"][name] / n for name in POSITION_SETS}, sum(len(r) for r in rows), n_sinks)
