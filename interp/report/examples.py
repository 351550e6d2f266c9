"""Max-activating examples: for each top neuron, the prompts that drive it hardest, token by token.

The prompts are ranked by the neuron's ``max`` reduction in the merged model's emoji cache (already
on disk), so only the few shown prompts are run again, to get per-token values for highlighting.
Prompts are shown raw (no chat template) so the highlighted tokens are the text's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from activations.hooks import recording
from activations.sites import neuron_sites
from activations.reader import open_cache


def readable_pieces(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Token texts with their values, where tokens that each hold part of one character (byte-level
    BPE splits an emoji over several) are joined into one piece carrying the value of largest
    magnitude, so no piece shows a broken character."""
    pieces: list[str] = []
    merged: list[float] = []
    start = 0
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(list(ids[start:end]))
        if "\ufffd" in text and end < len(ids):
            continue  # an incomplete character: take the next token too
        group = values[start:end]
        pieces.append(text)
        merged.append(float(group[np.argmax(np.abs(group))]))
        start = end
    return pieces, np.asarray(merged, dtype=np.float32)


def max_activating_examples(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    neurons: Sequence[tuple[int, int]],
    cache_path: str | Path,
    per_neuron: int = 2,
) -> list[dict[str, Any]]:
    """``[{label, tokens, weights}]``: weights are activations / the neuron's max over its examples."""
    with open_cache(cache_path) as cache:
        texts, layers = list(cache.texts), list(cache.layers)
        peaks = cache.reduction("content_max")  # (n_prompts, n_layers, d_mlp): template tokens excluded
    sites = {site.layer: site for site in neuron_sites(model)}
    examples = []
    for layer, index in neurons:
        top = np.argsort(-peaks[:, layers.index(layer), index])[:per_neuron]
        rows = []
        for prompt in top:
            ids = tokenizer(texts[prompt], return_tensors="pt").input_ids.to(next(model.parameters()).device)
            with recording([sites[layer]]) as acts, torch.inference_mode():
                model(ids)
            values = acts[layer][0, :, index].float().cpu().numpy()
            rows.append(readable_pieces(tokenizer, ids[0].tolist(), values))
        scale = max(float(np.abs(v).max()) for _, v in rows) or 1.0
        for rank, (tokens, values) in enumerate(rows):
            examples.append({"label": f"L{layer}.N{index} #{rank + 1}", "tokens": tokens,
                             "weights": [round(float(v) / scale, 3) for v in values]})
    return examples
