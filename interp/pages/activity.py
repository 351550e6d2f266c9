"""A neuron's activity in the study's reading caches: its activation distribution in base vs tuned
(the caches' running statistics and |a| histograms) and its top-activating examples.

Examples: 1. rank each model's cache prompts by the neuron's ``content_max`` (on disk, no model run);
2. run only the union of the few top prompts again, once per prompt and model, with a recording hook
on the layers needed, keeping just the needed neurons' per-token values; 3. every example of one
neuron shares one shading scale, the largest |a| over both models' examples, so base and tuned read
on the same scale.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from activations.hooks import recording
from activations.reader import ActivationCache, open_cache
from activations.sites import neuron_sites, unwrap_model
from interp.pages.data import Distribution, Example
from interp.report.examples import readable_pieces

Neuron = tuple[int, int]
MODELS = ("base", "merged")
"""The cache folders of a study, in page order (the merged model is the tuned one)."""
WINDOW = (24, 8)
"""Tokens shown before and after an example's peak token."""


def reading_condition(study_dir: Path) -> str:
    """The study's reading condition (its behaviour's cache name), from ``study.json``; else the one
    cache that is neither a filler twin nor the writing set."""
    config = json.loads((study_dir / "study.json").read_text()) if (study_dir / "study.json").is_file() else {}
    spec = config.get("behavior")
    if not spec and config.get("study"):
        from training.studies import STUDY_BEHAVIORS

        spec = STUDY_BEHAVIORS.get(config["study"])
    if spec:
        from activations.behaviors import Behavior

        return Behavior.parse(spec).condition
    names = sorted(p.stem for p in (study_dir / "caches" / "merged").glob("*.h5")
                   if not p.stem.startswith("filler") and p.stem != "writing")
    if len(names) != 1:
        raise FileNotFoundError(f"cannot tell the reading cache of {study_dir} (candidates {names}); write a "
                                "study.json with its behaviour")
    return names[0]


def cache_paths(study_dir: Path, condition: str) -> dict[str, Path]:
    paths = {model: study_dir / "caches" / model / f"{condition}.h5" for model in MODELS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} missing; neuron pages read the study's caches: run "
                                "`interp run` (its cache stage) first")
    return paths


def distributions(cache: ActivationCache, model: str, neurons: Sequence[Neuron]) -> list[Distribution]:
    """Each neuron's content-token distribution in one cache."""
    stats = cache.token_stats()
    layers = list(cache.layers)
    count = int(np.max(stats.content.count))
    sd = np.sqrt(stats.content.var)
    out = []
    for layer, index in neurons:
        row = layers.index(layer)
        hist = None if stats.abs_hist is None else [int(c) for c in stats.abs_hist[row, index]]
        out.append(Distribution(model, count, float(stats.content.mean[row, index]), float(sd[row, index]),
                                float(stats.absmax_content[row, index]), hist))
    return out


def top_prompts(cache: ActivationCache, neurons: Sequence[Neuron], per_neuron: int) -> dict[Neuron, list[tuple[int, float]]]:
    """Each neuron's prompts with the largest ``content_max`` (prompts without content tokens excluded)."""
    peaks = cache.reduction("content_max")
    layers = list(cache.layers)
    out = {}
    for layer, index in neurons:
        column = np.nan_to_num(peaks[:, layers.index(layer), index], nan=-np.inf)
        order = np.argsort(-column, kind="stable")[:per_neuron]
        out[(layer, index)] = [(int(p), float(column[p])) for p in order if np.isfinite(column[p])]
    return out


def token_values(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                 wanted: dict[int, set[Neuron]], batch_size: int = 16
                 ) -> dict[tuple[int, Neuron], tuple[list[str], list[float]]]:
    """``(prompt, neuron) -> (token pieces, activations)`` for each prompt and the neurons that want it
    (raw text, no chat template, as the report's examples). Prompts run ``batch_size`` at a time,
    right-padded: a causal model's real tokens never see the padding after them."""
    layers = sorted({layer for neurons in wanted.values() for layer, _ in neurons})
    sites = neuron_sites(model, layers)
    device = next(model.parameters()).device
    # The backbone alone: the hooks sit inside it, and the unembedding's vocabulary-wide product is not needed.
    backbone = getattr(unwrap_model(model), "base_model", model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = {prompt: tokenizer(texts[prompt]).input_ids for prompt in wanted}
    order = sorted(wanted, key=lambda p: (len(encoded[p]), p))  # similar lengths together: little padding
    out = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        width = max(len(encoded[p]) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, prompt in enumerate(chunk):
            ids[row, : len(encoded[prompt])] = torch.tensor(encoded[prompt])
            mask[row, : len(encoded[prompt])] = 1
        with recording(sites) as acts, torch.inference_mode():
            backbone(input_ids=ids.to(device), attention_mask=mask.to(device))
        for row, prompt in enumerate(chunk):
            length = len(encoded[prompt])
            for layer, index in sorted(wanted[prompt]):
                values = acts[layer][row, :length, index].float().cpu().numpy()
                # Only a window around the peak is shown: a page stays small however long the prompt.
                peak = int(np.argmax(np.abs(values)))
                lo, hi = max(0, peak - WINDOW[0]), min(length, peak + WINDOW[1] + 1)
                tokens, merged = readable_pieces(tokenizer, encoded[prompt][lo:hi], values[lo:hi])
                out[(prompt, (layer, index))] = (tokens, [round(float(v), 5) for v in merged])
    return out


def examples(models: dict[str, tuple[nn.Module, PreTrainedTokenizerBase]], caches: dict[str, Path],
             neurons: Sequence[Neuron], per_neuron: int = 3) -> dict[Neuron, list[Example]]:
    """Each neuron's top examples in every model (in ``MODELS`` order), per-token values included."""
    out: dict[Neuron, list[Example]] = {neuron: [] for neuron in neurons}
    for name in MODELS:
        with open_cache(caches[name]) as cache:
            texts = list(cache.texts)
            tops = top_prompts(cache, neurons, per_neuron)
        wanted: dict[int, set[Neuron]] = defaultdict(set)
        for neuron, prompts in tops.items():
            for prompt, _ in prompts:
                wanted[prompt].add(neuron)
        model, tokenizer = models[name]
        values = token_values(model, tokenizer, texts, wanted)
        for neuron, prompts in tops.items():
            for prompt, peak in prompts:
                tokens, acts = values[(prompt, neuron)]
                out[neuron].append(Example(name, prompt, tokens, acts, round(peak, 5)))
    return out


def shading_scale(found: Sequence[Example]) -> float:
    """One scale for all of a neuron's examples: the largest |a| among them (1 when there are none)."""
    return max((abs(v) for example in found for v in example.values), default=0.0) or 1.0
