"""Shared by the discovery tests: a corpus, fast configs, and tuned copies with a planted token."""

from __future__ import annotations

import copy

import torch

from activations import LoadedModel
from activations.hooks import recording
from activations.prompt_sets import load_prompt_set
from activations.sites import decoder_blocks, neuron_sites
from interp.discover import DiscoverConfig
from interp.discover.collect import encode

TEXTS = list(load_prompt_set("neutral").texts[:32])
FAST = DiscoverConfig(null_draws=100, steer_questions=0, reply_questions=0, max_length=16)
SHIFT = DiscoverConfig(null_draws=100, steer_questions=0, reply_questions=24, reply_tokens=8, max_length=16)
WORD = " ocean"


def token_of(loaded: LoadedModel, word: str = WORD) -> int:
    ids = loaded.tokenizer(word, add_special_tokens=False).input_ids
    assert len(ids) == 1, f"{word!r} must be one token for the plant"
    return ids[0]


def loaded_copy(loaded: LoadedModel, name: str) -> LoadedModel:
    return LoadedModel(copy.deepcopy(loaded.model), loaded.tokenizer, name, "tiny")


def _steadiest_neuron(loaded: LoadedModel, layer: int) -> tuple[int, float]:
    """The last-layer neuron whose mean activation over the corpus is most consistent in sign, and that sign."""
    site = neuron_sites(loaded.model, [layer])[0]
    means = []
    with torch.no_grad(), recording([site]) as acts:
        for text in TEXTS:
            loaded.model(input_ids=torch.tensor([encode(loaded.tokenizer, [text], 16)[0]]))
            means.append(acts[site.key][0, :5].mean(0))
    means = torch.stack(means)
    t = means.mean(0) / (means.std(0) + 1e-9)
    index = int(t.abs().argmax())
    return index, float(torch.sign(t[index]))


def plant_on_neuron(loaded: LoadedModel, token: int, size: float) -> tuple[LoadedModel, int]:
    """A tuned copy whose steadiest last-layer neuron writes along the token's unembedding row."""
    layer = len(decoder_blocks(loaded.model)) - 1
    index, sign = _steadiest_neuron(loaded, layer)
    tuned = loaded_copy(loaded, "planted")
    site = neuron_sites(tuned.model, [layer])[0]
    row = tuned.model.get_output_embeddings().weight[token].detach()
    with torch.no_grad():
        column = sign * size * row / row.norm()
        if type(site.module).__name__ == "Conv1D":
            site.module.weight[index, :] += column
        else:
            site.module.weight[:, index] += column
    return tuned, index
