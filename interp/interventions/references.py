"""Reference values for interventions: recorded neuron vectors, per-neuron means, donor token pools.

All of them are read at the same sites the interventions write (``activations.hooks.recording``),
so a value recorded here and written by ``patch``/``ablate`` means the same thing.
``content_reference`` is what the causal stages use: means, mean squares and a donor pool over the
*content* tokens of templated chats (``activations.roles``), so the chat template and position 0,
where massive-activation neurons take extreme values, never enter a mean ablation's value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from activations.hooks import recording
from activations.sites import neuron_sites

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ContentReference:
    """Per-neuron statistics of a model over content tokens of templated chats, by layer."""

    means: dict[int, Float[Tensor, " d_mlp"]]
    """Mean activation (mean ablation writes these)."""
    mean_square: dict[int, Float[Tensor, " d_mlp"]]
    """E[a^2] (for write norms, ``interp.causal.controls``)."""
    pool: dict[int, Float[Tensor, "n_tokens d_mlp"]]
    """Donor tokens for resample ablation (a seeded subset of the content tokens)."""
    n_tokens: int
    """Content tokens averaged over."""


@torch.no_grad()
def content_reference(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, template: str = "user",
    batch_size: int = 8, pool_tokens: int = 512, seed: int = 0,
) -> ContentReference:
    """Means, mean squares and a donor pool over the content tokens of ``texts`` in ``template``
    (float64 sums; float32 results on CPU)."""
    from activations.capture import pad_batch
    from activations.prompt_sets import PromptSet
    from activations.roles import encode_prompt_set

    encoded = encode_prompt_set(tokenizer, PromptSet.from_texts(list(texts), "reference"), template)
    device = next(model.parameters()).device
    sites = neuron_sites(model)
    sums: dict[int, Tensor] = {}
    squares: dict[int, Tensor] = {}
    chunks: dict[int, list[Tensor]] = {site.layer: [] for site in sites}
    n_tokens = 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(encoded), batch_size):
        batch, roles = pad_batch(encoded[start : start + batch_size], pad, "right", device)
        content = roles >= 1
        with recording(sites) as acts:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        n_tokens += int(content.sum())
        for layer, vector in acts.items():
            values = vector[content].double()
            sums[layer] = sums.get(layer, 0) + values.sum(0).cpu()
            squares[layer] = squares.get(layer, 0) + values.square().sum(0).cpu()
            chunks[layer].append(vector[content].float().cpu())
    if n_tokens == 0:
        raise ValueError("the reference texts hold no content tokens; pass non-empty texts")
    keep = torch.randperm(n_tokens, generator=torch.Generator().manual_seed(seed))[:pool_tokens]
    return ContentReference(
        {layer: (total / n_tokens).float() for layer, total in sums.items()},
        {layer: (total / n_tokens).float() for layer, total in squares.items()},
        {layer: torch.cat(parts)[keep] for layer, parts in chunks.items()},
        n_tokens,
    )


TokenBatches = Iterable[tuple[Tensor, Tensor]]
"""``(input_ids, attention_mask)`` pairs, each ``(batch, pos)``; mask 1 marks real tokens."""


@torch.no_grad()
def record_neurons(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None, layers: list[int] | None = None
) -> dict[int, Float[Tensor, "batch pos d_mlp"]]:
    """Every (or the chosen) layer's neuron vector for one forward pass, by layer.

    Positions count real tokens only (as ``generate`` and the causal batches count them), so a
    left-padded row gets the values it would get alone. Patch these into another model only on
    exactly the same ``input_ids`` and ``attention_mask``.
    """
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if attention_mask is not None:
        inputs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with recording(neuron_sites(model, layers=layers)) as acts:
        model(**inputs)
    return dict(acts)


@torch.no_grad()
def mean_activations(model: nn.Module, batches: TokenBatches) -> dict[int, Float[Tensor, " d_mlp"]]:
    """Per-neuron mean over all real tokens (float64 sums, float32 result, on CPU), by layer."""
    sums: dict[int, Tensor] = {}
    n_tokens = 0
    for input_ids, attention_mask in batches:
        acts = record_neurons(model, input_ids, attention_mask)
        real = attention_mask.bool()
        n_tokens += int(real.sum())
        for layer, vector in acts.items():
            total = vector[real.to(vector.device)].double().sum(0).cpu()
            sums[layer] = sums[layer] + total if layer in sums else total
    if n_tokens == 0:
        raise ValueError("no real tokens to average over; pass at least one non-empty prompt")
    return {layer: (total / n_tokens).float() for layer, total in sums.items()}


@torch.no_grad()
def token_pool(
    model: nn.Module, batches: TokenBatches, max_tokens: int | None = 4096, seed: int = 0
) -> dict[int, Float[Tensor, "n_tokens d_mlp"]]:
    """Neuron vectors of real tokens (donors for resample ablation), by layer, float32 on CPU.

    Keeps at most ``max_tokens`` tokens, chosen at random (seeded) and the same tokens in every
    layer, so a pool built from many prompts stays small.
    """
    chunks: dict[int, list[Tensor]] = {}
    for input_ids, attention_mask in batches:
        acts = record_neurons(model, input_ids, attention_mask)
        real = attention_mask.bool()
        for layer, vector in acts.items():
            chunks.setdefault(layer, []).append(vector[real.to(vector.device)].float().cpu())
    if not chunks:
        raise ValueError("no prompts given for the resample donor pool")
    pool = {layer: torch.cat(parts) for layer, parts in chunks.items()}
    n_tokens = len(next(iter(pool.values())))
    if n_tokens == 0:
        raise ValueError("the resample donor prompts hold no real tokens")
    if max_tokens is not None and n_tokens > max_tokens:
        keep = torch.randperm(n_tokens, generator=torch.Generator().manual_seed(seed))[:max_tokens]
        pool = {layer: tokens[keep] for layer, tokens in pool.items()}
    return pool


def mean_reference_from_cache(path: str | Path) -> dict[int, Float[Tensor, " d_mlp"]]:
    """Per-neuron means over content tokens from an activation cache (template and position 0
    excluded), by layer."""
    from activations.reader import open_cache

    with open_cache(path) as cache:
        means = torch.as_tensor(cache.running_mean("content")).float()
        layers = [int(layer) for layer in cache.layers]
    log.info("mean reference from %s: %d layers x %d neurons", path, len(layers), means.shape[-1])
    return {layer: means[row] for row, layer in enumerate(layers)}
