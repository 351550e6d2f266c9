"""Load the caches a diff design reads, and refuse any set of caches that does not belong together.

A design (``interp.stats.contrasts.DiffDesign``) reads cells: one reduction of one model's cache on
one condition. Its statistics pair rows by position, so this module checks, before any statistic:

- every cache records the same layers, d_mlp and template;
- base and merged caches of a condition hold the same prompts: same ids in the same order, the same
  texts, and the same prompt-set hash (marks included); ids alone are not enough, since two
  unrelated files can share ids;
- conditions that meet in a contrast (twins) hold the same ids in the same order;
- each model's caches come from one set of weights, and base and merged from different ones.

Rows read after the same context (several sampled replies to one question, in the writing set) are
not independent: after the checks, each such group becomes one row, the mean of its rows where a
reduction is defined, so a question is one unit of every test however many replies it has.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interp.stats.contrasts import MODELS, DiffDesign

log = logging.getLogger(__name__)

CacheSource = Any
"""A cache file path, or an open ``activations.reader.ActivationCache`` (e.g. an in-memory capture)."""
SetSources = str | os.PathLike | Mapping[str, CacheSource]
"""A directory holding ``{condition}.h5`` files, or a mapping condition -> cache."""


@dataclass(frozen=True, eq=False)
class LoadedCache:
    """Some reductions of one cache, with what is needed to check it against the others."""

    label: str
    """Who it is, for error messages: e.g. ``base emoji (runs/base/emoji.h5)``."""
    prompt_ids: tuple[str, ...]
    texts: tuple[str, ...]
    contexts: tuple[str, ...] | None
    """What each prompt was read after (a writing reply's question), when the cache records it."""
    layers: tuple[int, ...]
    d_mlp: int
    attrs: dict[str, Any]
    """The cache's HDF5 attributes (model_spec, weights_hash, template, prompt_set_hash, ...)."""
    reductions: dict[str, np.ndarray]
    """name -> (n_prompts, n_layers, d_mlp) float32; NaN only in rows where ``defined`` is False."""
    defined: dict[str, np.ndarray]
    """name -> (n_prompts,) bool: the prompt has tokens in the reduction's scope."""
    stats: Any = None
    """``activations.running.TokenStats`` of the cache (moments, max |a|, histogram)."""

    @property
    def acts(self) -> np.ndarray:
        """The only reduction, for callers that load one (``interp.stats.regress``)."""
        if len(self.reductions) != 1:
            raise ValueError(f"{self.label} was loaded with reductions {list(self.reductions)}; pick one")
        return next(iter(self.reductions.values()))


def _open(source: CacheSource):
    from activations.reader import ActivationCache, open_cache  # deferred: it imports torch

    if isinstance(source, ActivationCache):
        return source, False
    return open_cache(source), True


def load_cache(source: CacheSource, label: str, reductions: str | Sequence[str]) -> LoadedCache:
    """Read ``reductions`` (one name or several), their definedness and the token statistics."""
    names = (reductions,) if isinstance(reductions, str) else tuple(reductions)
    cache, owned = _open(source)
    try:
        if cache.site_names is not None:  # a neuron here is (layer, index); an expert's needs (layer, expert, index)
            raise ValueError(f"{label} ({cache.label}) holds mixture-of-experts sites ({cache.site_names[0]}, ...), several "
                             "rows per layer; the statistics key neurons by (layer, index) and have no expert column "
                             "yet: read such a cache with activations.reader.open_cache")
        missing = [name for name in names if name not in cache.reductions]
        if missing:
            raise ValueError(f"{label} ({cache.label}) holds reductions {list(cache.reductions)}, not {missing}; "
                             "capture it with those reductions (--reductions)")
        loaded = LoadedCache(
            label=f"{label} ({cache.label})",
            prompt_ids=tuple(cache.prompt_ids),
            texts=tuple(cache.texts),
            contexts=None if cache.contexts() is None else tuple(cache.contexts()),
            layers=tuple(int(layer) for layer in cache.layers),
            d_mlp=int(cache.d_mlp),
            attrs=dict(cache.attrs),
            reductions={name: cache.reduction(name) for name in names},
            defined={name: cache.defined(name) for name in names},
            stats=cache.token_stats(),
        )
    finally:
        if owned:
            cache.close()
    for name, values in loaded.reductions.items():
        rows = loaded.defined[name]
        if not np.isfinite(values[rows]).all():
            raise ValueError(f"{loaded.label} has NaN or inf activations in /acts/{name} where it has tokens; "
                             "capture it again with --overwrite")
    return loaded


def check_same_layout(caches: Sequence[LoadedCache], *, template: bool = True) -> None:
    """All caches record the same layers, d_mlp and (with ``template``) template."""
    first = caches[0]
    for other in caches[1:]:
        if other.layers != first.layers:
            raise ValueError(f"{first.label} records layers {list(first.layers)} but {other.label} "
                             f"records {list(other.layers)}; capture both with the same --layers")
        if other.d_mlp != first.d_mlp:
            raise ValueError(f"{first.label} has d_mlp={first.d_mlp} but {other.label} has d_mlp={other.d_mlp}; "
                             "they come from different architectures")
        first_template, other_template = first.attrs.get("template"), other.attrs.get("template")
        if template and first_template != other_template:
            raise ValueError(f"{first.label} used template {first_template!r} but {other.label} used "
                             f"{other_template!r}; capture both with the same --template")


def check_same_prompts(a: LoadedCache, b: LoadedCache, *, texts: bool = True) -> None:
    """``a`` and ``b`` hold the same prompt ids in the same order (rows are paired by position) and,
    with ``texts``, the same texts (for base and merged caches of one condition)."""
    if a.prompt_ids != b.prompt_ids:
        if sorted(a.prompt_ids) == sorted(b.prompt_ids):
            row = next(i for i, (x, y) in enumerate(zip(a.prompt_ids, b.prompt_ids)) if x != y)
            raise ValueError(f"{a.label} and {b.label} hold the same prompt ids in a different order (first at row "
                             f"{row}: {a.prompt_ids[row]!r} vs {b.prompt_ids[row]!r}); capture both from the same "
                             "prompt file")
        only_a = sorted(set(a.prompt_ids) - set(b.prompt_ids))
        only_b = sorted(set(b.prompt_ids) - set(a.prompt_ids))
        raise ValueError(f"{a.label} and {b.label} hold different prompts ({len(a.prompt_ids)} vs {len(b.prompt_ids)} "
                         f"rows; only in the first: {only_a[:3]}, only in the second: {only_b[:3]}); capture both "
                         "from the same prompt file (twins must be built from the same set)")
    if not texts:
        return
    if a.texts != b.texts:
        row = next(i for i, (x, y) in enumerate(zip(a.texts, b.texts)) if x != y)
        raise ValueError(f"{a.label} and {b.label} share prompt ids but not texts (first at {a.prompt_ids[row]!r}: "
                         f"{a.texts[row][:40]!r} vs {b.texts[row][:40]!r}); capture both models from the same prompts")
    hash_a, hash_b = a.attrs.get("prompt_set_hash"), b.attrs.get("prompt_set_hash")
    if hash_a and hash_b and hash_a != hash_b:
        raise ValueError(f"{a.label} and {b.label} were captured from different prompt sets (hash {hash_a} vs "
                         f"{hash_b}: same texts, other marks or contexts); capture both from the same set")


def check_models(caches: Mapping[tuple[str, str], LoadedCache]) -> None:
    """Each model's caches come from one set of weights, and base and merged from different ones."""
    hashes = {}
    for model in MODELS:
        found = {cache.attrs.get("weights_hash") for (m, _), cache in caches.items() if m == model} - {None}
        if len(found) > 1:
            listing = "; ".join(f"{c.label}: {c.attrs.get('weights_hash')}" for (m, _), c in caches.items() if m == model)
            raise ValueError(f"these caches should come from one model but have different weights ({listing}); "
                             "pass caches captured from the same model")
        hashes[model] = found.pop() if found else None
    if hashes["base"] is not None and hashes["base"] == hashes["merged"]:
        raise ValueError(f"the base and merged caches were captured from the same weights ({hashes['base']}); "
                         "pass the fine-tuned (merged) model's caches as merged")


@dataclass(frozen=True, eq=False)
class DiffInputs:
    """Everything a design's statistics read, in memory.

    ``cells[(model, condition, reduction)]`` is ``(n_prompts, n_layers, d_mlp)``; rows of
    conditions that meet in a contrast are the same prompts. ``scales[condition]`` is the base
    model's per-neuron token SD over content tokens, ``(n_layers, d_mlp)``.
    """

    cells: dict[tuple[str, str, str], np.ndarray]
    defined: dict[tuple[str, str, str], np.ndarray]
    scales: dict[str, np.ndarray]
    layers: tuple[int, ...]
    prompt_ids: dict[str, tuple[str, ...]] = field(default_factory=dict)
    stats: dict[tuple[str, str], Any] = field(default_factory=dict)
    """``(model, condition)`` -> ``TokenStats`` (for outliers and firing rates; may be empty)."""
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {np.shape(v)[1:] for v in self.cells.values()}
        if len(shapes) != 1:
            raise ValueError(f"cells disagree on (n_layers, d_mlp): {sorted(shapes)}")
        if len(self.layers) != shapes.pop()[0]:
            raise ValueError(f"{len(self.layers)} layer numbers for {next(iter(self.cells.values())).shape[1]} layers")
        for key, values in self.cells.items():
            if key not in self.defined:
                self.defined[key] = np.isfinite(values).all(axis=(1, 2))

    @property
    def d_mlp(self) -> int:
        return int(next(iter(self.cells.values())).shape[2])

    @property
    def n_neurons(self) -> int:
        return len(self.layers) * self.d_mlp


SCALE_FLOOR = 0.01
"""A neuron's scale is at least this share of its layer's median scale (see ``token_scale``)."""


def token_scale(stats: Sequence[Any]) -> np.ndarray:
    """Per-neuron SD of the activation over content tokens, pooled over the given models' token
    statistics (the mean of their variances), ``(n_layers, d_mlp)``.

    Pooled, so a neuron silent in base and active after the fine-tune is measured on its active
    scale; floored at ``SCALE_FLOOR`` x its layer's median, so a neuron silent in both cannot turn a
    numerically negligible change into a large standardised one."""
    variances = np.stack([np.nan_to_num(s.content.var) for s in stats])
    scale = np.sqrt(variances.mean(axis=0))
    floor = SCALE_FLOOR * np.median(scale, axis=1, keepdims=True)
    return np.maximum(scale, floor)


def resolve_sources(source: SetSources, role: str, conditions: Sequence[str]) -> dict[str, CacheSource]:
    """condition -> cache for one model (``role`` is "base" or "merged")."""
    if isinstance(source, Mapping):
        unknown = sorted(set(source) - set(conditions))
        if unknown:
            log.info("%s caches: ignoring conditions %s that the design does not read", role, unknown)
        found = {name: source[name] for name in conditions if name in source and source[name] is not None}
    else:
        directory = Path(source)
        if not directory.is_dir():
            raise FileNotFoundError(f"{role} cache directory {directory} does not exist; pass a directory holding "
                                    f"{', '.join(f'{c}.h5' for c in conditions)} or a mapping condition -> cache")
        found = {name: directory / f"{name}.h5" for name in conditions if (directory / f"{name}.h5").exists()}
    missing = [name for name in conditions if name not in found]
    if missing:
        raise FileNotFoundError(f"{role} caches: no cache for conditions {missing}; the design reads "
                                f"{list(conditions)}")
    return found


def load_design_inputs(design: DiffDesign, base: SetSources | None, merged: SetSources | None) -> DiffInputs:
    """Load and cross-check every cell ``design`` reads (module docstring)."""
    needed = {(t.model, t.condition) for c in design.contrasts for t in c.terms}
    needed |= {("base", c.scale) for c in design.contrasts}
    sources = {"base": base, "merged": merged}
    caches: dict[tuple[str, str], LoadedCache] = {}
    for model in MODELS:
        conditions = sorted({cond for m, cond in needed if m == model})
        if not conditions:
            continue
        if sources[model] is None:
            raise ValueError(f"the {design.name} design reads {model} caches ({conditions}); pass them")
        for condition, source in resolve_sources(sources[model], model, conditions).items():
            caches[model, condition] = load_cache(source, f"{model} {condition}", design.reductions(condition))
    check_same_layout(list(caches.values()), template=False)  # a condition may read replies as the assistant
    for condition in {cond for _, cond in caches}:
        if ("base", condition) in caches and ("merged", condition) in caches:
            check_same_layout([caches["base", condition], caches["merged", condition]])
            check_same_prompts(caches["base", condition], caches["merged", condition])
    for group in design.paired():
        for model in MODELS:
            present = [caches[model, cond] for cond in group if (model, cond) in caches]
            for other in present[1:]:
                check_same_layout([present[0], other])
                check_same_prompts(present[0], other, texts=False)
    check_models(caches)
    cells, defined, prompt_ids = {}, {}, {}
    for (model, condition), cache in caches.items():
        groups = context_groups(cache.contexts) if cache.contexts is not None else None
        for name, values in cache.reductions.items():
            cells[model, condition, name], defined[model, condition, name] = \
                (values, cache.defined[name]) if groups is None else group_means(values, cache.defined[name], groups)
        prompt_ids[condition] = cache.prompt_ids if groups is None else tuple(cache.prompt_ids[g[0]] for g in groups)
    scales = {condition: token_scale([caches[m, condition].stats for m in MODELS if (m, condition) in caches])
              for condition in design.conditions if any((m, condition) in caches for m in MODELS)}
    first = next(iter(caches.values()))
    provenance = {
        "design": design.name,
        "caches": {f"{m}/{c}": cache.label for (m, c), cache in caches.items()},
        "models": {m: {key: next((cache.attrs.get(key) for (mm, _), cache in caches.items() if mm == m), None)
                       for key in ("model_spec", "weights_hash")} for m in MODELS},
        "template": first.attrs.get("template"),
        "n_prompts": {c: len(cache.prompt_ids) for (m, c), cache in caches.items() if m == "base" or ("base", c) not in caches},
        "n_units": {c: len(ids) for c, ids in prompt_ids.items()},
        "prompt_set_hashes": {f"{m}/{c}": cache.attrs.get("prompt_set_hash") for (m, c), cache in caches.items()},
    }
    return DiffInputs(cells, defined, scales, first.layers, prompt_ids,
                      {key: cache.stats for key, cache in caches.items()}, provenance)


def context_groups(contexts: Sequence[str]) -> list[list[int]] | None:
    """Row groups that share a context, in order of first appearance; None when every context is distinct."""
    groups: dict[str, list[int]] = {}
    for row, context in enumerate(contexts):
        groups.setdefault(context, []).append(row)
    return None if len(groups) == len(contexts) else list(groups.values())


def group_means(values: np.ndarray, defined: np.ndarray, groups: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """One row per group: the mean of its defined rows (NaN where it has none), and whether it has any."""
    out = np.full((len(groups), *values.shape[1:]), np.nan, dtype=values.dtype)
    has = np.zeros(len(groups), dtype=bool)
    for g, rows in enumerate(groups):
        rows = [r for r in rows if defined[r]]
        if rows:
            out[g], has[g] = values[rows].mean(0), True
    return out, has
