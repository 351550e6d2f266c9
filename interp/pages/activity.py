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
                 wanted: dict[int, set[Neuron]]) -> dict[tuple[int, Neuron], tuple[list[str], list[float]]]:
    """``(prompt, neuron) -> (token pieces, activations)`` for each prompt and the neurons that want it,
    one forward per prompt (raw text, no chat template, as the report's examples)."""
    layers = sorted({layer for neurons in wanted.values() for layer, _ in neurons})
    sites = neuron_sites(model, layers)
    device = next(model.parameters()).device
    # The backbone alone: the hooks sit inside it, and the unembedding's vocabulary-wide product is not needed.
    backbone = getattr(unwrap_model(model), "base_model", model)
    out = {}
    for prompt, neurons in sorted(wanted.items()):
        ids = tokenizer(texts[prompt], return_tensors="pt").input_ids.to(device)
        with recording(sites) as acts, torch.inference_mode():
            backbone(ids)
        for layer, index in sorted(neurons):
            values = acts[layer][0, :, index].float().cpu().numpy()
            # Only a window around the peak is shown: a page stays small however long the prompt.
            peak = int(np.argmax(np.abs(values)))
            start, stop = max(0, peak - WINDOW[0]), min(len(values), peak + WINDOW[1] + 1)
            tokens, merged = readable_pieces(tokenizer, ids[0, start:stop].tolist(), values[start:stop])
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
