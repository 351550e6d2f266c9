"""Load the caches a diff needs and check that they belong together.

A diff compares the base and the merged model on three prompt sets: ``emoji``, its twin
``emoji-free`` (same ids, emojis removed) and ``neutral``. The statistics pair rows by position, so
this module refuses any set of caches whose rows would not line up: different prompt ids or
order, layers, d_mlp, template, a missing reduction, or "merged" caches from the base weights.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PROMPT_SETS: tuple[str, ...] = ("emoji", "emoji-free", "neutral")
"""Prompt-set names; a cache directory holds them as ``DIR/{name}.h5``."""
REQUIRED_SETS: tuple[str, ...] = ("emoji", "emoji-free")
REDUCTIONS: tuple[str, ...] = ("mean", "max", "last")
"""Per-prompt reductions a cache may hold (docs/DESIGN.md)."""

CacheSource = str | os.PathLike
"""A cache file path."""
SetSources = CacheSource | Mapping[str, CacheSource]
"""A directory holding ``{emoji,emoji-free,neutral}.h5``, or a mapping prompt-set name -> cache path."""


@dataclass(frozen=True, eq=False)
class LoadedCache:
    """One reduction of one cache, with what is needed to check it against the others."""

    label: str
    """Who it is, for error messages: e.g. ``base emoji (runs/base/emoji.h5)``."""
    prompt_ids: tuple[str, ...]
    """Prompt ids in row order."""
    layers: tuple[int, ...]
    """Recorded layers."""
    d_mlp: int
    """Neurons per layer."""
    attrs: dict[str, Any]
    """The cache's HDF5 attributes (model_spec, weights_hash, template, ...)."""
    acts: np.ndarray
    """(n_prompts, n_layers, d_mlp) float32 activations of the chosen reduction."""


def resolve_set_paths(source: SetSources, role: str) -> dict[str, Path]:
    """Map prompt-set name -> cache path for one model (``role`` is "base" or "merged")."""
    if isinstance(source, Mapping):
        unknown = sorted(set(source) - set(PROMPT_SETS))
        if unknown:
            raise ValueError(f"{role} caches: unknown prompt sets {unknown}; use the names {list(PROMPT_SETS)}")
        paths = {name: Path(path) for name, path in source.items() if path is not None}
    else:
        directory = Path(source)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"{role} cache directory {directory} does not exist; pass a directory holding "
                f"{', '.join(f'{name}.h5' for name in PROMPT_SETS)} or one path per prompt set"
            )
        paths = {name: directory / f"{name}.h5" for name in PROMPT_SETS if (directory / f"{name}.h5").exists()}
    missing = [name for name in REQUIRED_SETS if name not in paths]
    if missing:
        raise FileNotFoundError(
            f"{role} caches: no cache for prompt sets {missing}; a diff needs {list(REQUIRED_SETS)}"
        )
    return paths


def load_cache(path: CacheSource, label: str, reduction: str) -> LoadedCache:
    """Read one reduction of a cache through ``activations.store.open_cache``."""
    from activations.store import open_cache  # deferred: it imports torch, the stats do not need it

    with open_cache(path) as cache:
        if reduction not in cache.reductions:
            raise ValueError(
                f"{label} holds reductions {list(cache.reductions)}, not {reduction!r}; "
                f"pass one of them as the reduction or capture it with that reduction"
            )
        acts = cache.reduction(reduction)
        loaded = LoadedCache(
            label=f"{label} ({path})",
            prompt_ids=tuple(cache.prompt_ids),
            layers=tuple(int(layer) for layer in cache.layers),
            d_mlp=int(cache.d_mlp),
            attrs=dict(cache.attrs),
            acts=acts,
        )
    if np.isnan(loaded.acts).any():
        raise ValueError(f"{loaded.label} contains NaN activations; capture it again")
    return loaded


def check_same_layout(caches: Sequence[LoadedCache]) -> None:
    """All caches record the same layers, d_mlp and template."""
    first = caches[0]
    for other in caches[1:]:
        if other.layers != first.layers:
            raise ValueError(f"{first.label} records layers {list(first.layers)} but {other.label} "
                             f"records {list(other.layers)}; capture both with the same --layers")
        if other.d_mlp != first.d_mlp:
            raise ValueError(f"{first.label} has d_mlp={first.d_mlp} but {other.label} has d_mlp={other.d_mlp}; "
                             "they come from different architectures")
        template, other_template = first.attrs.get("template"), other.attrs.get("template")
        if template != other_template:
            raise ValueError(f"{first.label} used template {template!r} but {other.label} used "
                             f"{other_template!r}; capture both with the same --template")


def check_same_prompts(a: LoadedCache, b: LoadedCache) -> None:
    """``a`` and ``b`` hold the same prompt ids in the same order (rows are paired by position)."""
    if a.prompt_ids == b.prompt_ids:
        return
    if sorted(a.prompt_ids) == sorted(b.prompt_ids):
        row = next(i for i, (x, y) in enumerate(zip(a.prompt_ids, b.prompt_ids)) if x != y)
        raise ValueError(f"{a.label} and {b.label} hold the same prompt ids in a different order (first at row "
                         f"{row}: {a.prompt_ids[row]!r} vs {b.prompt_ids[row]!r}); capture both from the same "
                         "prompt file")
    only_a = sorted(set(a.prompt_ids) - set(b.prompt_ids))
    only_b = sorted(set(b.prompt_ids) - set(a.prompt_ids))
    raise ValueError(f"{a.label} and {b.label} hold different prompts ({len(a.prompt_ids)} vs {len(b.prompt_ids)} "
                     f"rows; only in the first: {only_a[:3]}, only in the second: {only_b[:3]}); capture both "
                     "from the same prompt file (emoji-free must be derived from the same emoji set)")


def check_models(base: Sequence[LoadedCache], merged: Sequence[LoadedCache]) -> None:
    """Each role's caches come from one set of weights, and base and merged from different ones."""
    for role in (base, merged):
        hashes = {cache.attrs.get("weights_hash") for cache in role} - {None}
        if len(hashes) > 1:
            listing = "; ".join(f"{cache.label}: {cache.attrs.get('weights_hash')}" for cache in role)
            raise ValueError(f"these caches should come from one model but have different weights ({listing}); "
                             "pass caches captured from the same model")
    base_hash = base[0].attrs.get("weights_hash")
    if base_hash is not None and base_hash == merged[0].attrs.get("weights_hash"):
        raise ValueError(f"{base[0].label} and {merged[0].label} were captured from the same weights "
                         f"({base_hash}); pass the fine-tuned (merged) model's caches as merged")


@dataclass(frozen=True, eq=False)
class DiffInputs:
    """One reduction of the base and merged model's activations on the prompt sets, in memory.

    Rows of the four emoji/twin arrays are the same prompt pairs; the neutral rows are other
    prompts, paired only between base and merged.
    """

    base_emoji: np.ndarray
    """(n_pairs, n_layers, d_mlp) base model on the emoji texts."""
    base_twin: np.ndarray
    """(n_pairs, n_layers, d_mlp) base model on their emoji-free twins."""
    merged_emoji: np.ndarray
    """(n_pairs, n_layers, d_mlp) merged model on the emoji texts."""
    merged_twin: np.ndarray
    """(n_pairs, n_layers, d_mlp) merged model on the twins."""
    base_neutral: np.ndarray | None = None
    """(n_neutral, n_layers, d_mlp) base model on neutral texts, or None to skip that control."""
    merged_neutral: np.ndarray | None = None
    """(n_neutral, n_layers, d_mlp) merged model on the same neutral texts."""
    layers: tuple[int, ...] | None = None
    """Layer numbers of axis 1 (default 0..n_layers-1)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Where the arrays came from (paths, model specs, weights hashes), copied into summaries."""

    def __post_init__(self) -> None:
        shape = np.shape(self.base_emoji)
        if len(shape) != 3:
            raise ValueError(f"activations must be (n_prompts, n_layers, d_mlp), got shape {shape}")
        for name in ("base_twin", "merged_emoji", "merged_twin"):
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"{name} has shape {np.shape(getattr(self, name))} but base_emoji has {shape}; "
                                 "the emoji and twin caches of both models must hold the same prompt pairs")
        if shape[0] < 2:
            raise ValueError(f"need at least 2 prompt pairs, got {shape[0]}")
        if (self.base_neutral is None) != (self.merged_neutral is None):
            raise ValueError("pass neutral caches for both models or for neither")
        if self.base_neutral is not None:
            neutral = np.shape(self.base_neutral)
            if np.shape(self.merged_neutral) != neutral:
                raise ValueError(f"base_neutral has shape {neutral} but merged_neutral has "
                                 f"{np.shape(self.merged_neutral)}; they must hold the same prompts")
            if len(neutral) != 3 or neutral[1:] != shape[1:] or neutral[0] < 2:
                raise ValueError(f"neutral activations have shape {neutral}; need (>=2, {shape[1]}, {shape[2]})")
        if self.layers is None:
            object.__setattr__(self, "layers", tuple(range(shape[1])))
        elif len(self.layers) != shape[1]:
            raise ValueError(f"{len(self.layers)} layer numbers given for {shape[1]} layers")

    @property
    def has_neutral(self) -> bool:
        return self.base_neutral is not None


def load_diff_inputs(base: SetSources, merged: SetSources, reduction: str = "mean") -> DiffInputs:
    """Load and cross-check the caches of both models (see the module docstring)."""
    base_paths, merged_paths = resolve_set_paths(base, "base"), resolve_set_paths(merged, "merged")
    if ("neutral" in base_paths) != ("neutral" in merged_paths):
        have = "base" if "neutral" in base_paths else "merged"
        raise ValueError(f"only the {have} model has a neutral cache; pass neutral caches for both or neither")
    names = [name for name in PROMPT_SETS if name in base_paths]
    loaded = {
        (role, name): load_cache(paths[name], f"{role} {name}", reduction)
        for role, paths in (("base", base_paths), ("merged", merged_paths))
        for name in names
    }
    check_same_layout(list(loaded.values()))
    for name in names:
        check_same_prompts(loaded["base", name], loaded["merged", name])
    for role in ("base", "merged"):
        check_same_prompts(loaded[role, "emoji"], loaded[role, "emoji-free"])
    check_models([loaded["base", n] for n in names], [loaded["merged", n] for n in names])

    provenance = {
        "reduction": reduction,
        "caches": {f"{role}/{name}": str(paths[name])
                   for role, paths in (("base", base_paths), ("merged", merged_paths)) for name in names},
        "models": {role: {key: loaded[role, "emoji"].attrs.get(key) for key in ("model_spec", "weights_hash")}
                   for role in ("base", "merged")},
        "template": loaded["base", "emoji"].attrs.get("template"),
        "n_pairs": len(loaded["base", "emoji"].prompt_ids),
        "n_neutral": len(loaded["base", "neutral"].prompt_ids) if "neutral" in names else 0,
    }
    neutral = "neutral" in names
    return DiffInputs(
        base_emoji=loaded["base", "emoji"].acts,
        base_twin=loaded["base", "emoji-free"].acts,
        merged_emoji=loaded["merged", "emoji"].acts,
        merged_twin=loaded["merged", "emoji-free"].acts,
        base_neutral=loaded["base", "neutral"].acts if neutral else None,
        merged_neutral=loaded["merged", "neutral"].acts if neutral else None,
        layers=loaded["base", "emoji"].layers,
        provenance=provenance,
    )
