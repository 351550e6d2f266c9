"""Builders for the statistics tests: synthetic activations and HDF5 caches in the DESIGN.md schema.

The caches are written with plain h5py, following docs/DESIGN.md field by field, so the tests
exercise ``activations.store.open_cache`` as a reader of the documented format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from interp.stats.loading import DiffInputs

SCHEMA = "neurodiff.activations/1"


def write_cache(
    path: Path,
    acts: np.ndarray | dict[str, np.ndarray],
    ids: Sequence[str],
    *,
    weights_hash: str = "base-hash",
    model_spec: str = "tiny-base",
    prompt_set: str = "emoji",
    template: str = "raw",
    layers: Sequence[int] | None = None,
) -> Path:
    """Write a complete cache; ``acts`` is the ``mean`` reduction or a dict of reductions."""
    reductions = {"mean": acts} if isinstance(acts, np.ndarray) else dict(acts)
    first = next(iter(reductions.values()))
    n_prompts, n_layers, d_mlp = first.shape
    layers = list(range(n_layers)) if layers is None else list(layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    utf8 = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        for name, values in reductions.items():
            f.create_dataset(f"acts/{name}", data=np.asarray(values, dtype=np.float32))
        f.create_dataset("prompts/ids", data=list(ids), dtype=utf8)
        f.create_dataset("prompts/texts", data=[f"text of {i}" for i in ids], dtype=utf8)
        f.create_dataset("prompts/n_tokens", data=np.full(n_prompts, 5, dtype=np.int32))
        f.create_dataset("running/count", data=np.int64(5 * n_prompts))
        f.create_dataset("running/mean", data=np.asarray(first, np.float64).mean(axis=0))
        f.create_dataset("running/m2", data=np.ones((n_layers, d_mlp), np.float64))
        f.attrs.update({
            "schema": SCHEMA, "model_spec": model_spec, "weights_hash": weights_hash,
            "prompt_set": prompt_set, "prompt_set_hash": f"hash-{prompt_set}", "tokenizer": "tiny",
            "template": template, "dtype": "float32", "reductions": json.dumps(list(reductions)),
            "layers": np.asarray(layers, dtype=np.int64), "d_mlp": d_mlp, "package_version": "0.1.0",
            "created": "2025-01-01T00:00:00", "complete": True, "batch_size": 8, "n_done": n_prompts,
        })
    return path


def synthetic_inputs(
    rng: np.random.Generator,
    n_pairs: int = 40,
    n_layers: int = 2,
    d_mlp: int = 250,
    n_neutral: int = 30,
    planted: np.ndarray | None = None,
    shift: float = 0.4,
) -> DiffInputs:
    """Activations with the correlation structure of real pairs, plus a known interaction.

    Every cell of a prompt pair shares a prompt effect (sd 1); base and merged share a
    prompt x emoji effect (sd 0.5, how much the emojis of this text move the neuron); emoji and
    twin share a prompt x model effect (sd 0.3); each cell adds its own noise (sd 0.3). Neurons in
    ``planted`` (flat indices) get ``shift`` added to merged on emoji texts only.
    """
    shape = (n_pairs, n_layers * d_mlp)
    prompt = rng.normal(0.0, 1.0, shape)
    emoji_effect = rng.normal(0.0, 0.5, shape)
    model_effect = rng.normal(0.0, 0.3, shape)

    def cell(*parts: np.ndarray) -> np.ndarray:
        return prompt + sum(parts) + rng.normal(0.0, 0.3, shape)

    base_emoji, base_twin = cell(emoji_effect), cell()
    merged_emoji, merged_twin = cell(emoji_effect, model_effect), cell(model_effect)
    if planted is not None:
        merged_emoji[:, planted] += shift
    neutral_shape = (n_neutral, n_layers * d_mlp)
    neutral_prompt = rng.normal(0.0, 1.0, neutral_shape)
    base_neutral = neutral_prompt + rng.normal(0.0, 0.3, neutral_shape)
    merged_neutral = neutral_prompt + rng.normal(0.0, 0.3, neutral_shape) + rng.normal(0.0, 0.3, neutral_shape)

    def as_cache(flat: np.ndarray) -> np.ndarray:
        return flat.reshape(flat.shape[0], n_layers, d_mlp).astype(np.float32)

    return DiffInputs(
        base_emoji=as_cache(base_emoji), base_twin=as_cache(base_twin),
        merged_emoji=as_cache(merged_emoji), merged_twin=as_cache(merged_twin),
        base_neutral=as_cache(base_neutral), merged_neutral=as_cache(merged_neutral),
    )


def write_diff_caches(root: Path, inputs: DiffInputs, **attrs: str) -> tuple[Path, Path]:
    """Write ``inputs`` as ``root/base/{emoji,emoji-free,neutral}.h5`` and ``root/merged/...``."""
    n_pairs, n_neutral = inputs.base_emoji.shape[0], inputs.base_neutral.shape[0]
    pair_ids = [f"e{i:03d}" for i in range(n_pairs)]
    neutral_ids = [f"n{i:03d}" for i in range(n_neutral)]
    for role in ("base", "merged"):
        for name, cell, ids in (("emoji", "emoji", pair_ids), ("emoji-free", "twin", pair_ids),
                                ("neutral", "neutral", neutral_ids)):
            write_cache(root / role / f"{name}.h5", getattr(inputs, f"{role}_{cell}"), ids,
                        weights_hash=f"{role}-hash", model_spec=f"tiny-{role}", prompt_set=name, **attrs)
    return root / "base", root / "merged"
