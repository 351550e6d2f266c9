"""Builders for the statistics tests: token-level simulations with real nuisance structure.

``simulate_study`` draws token activations the way a chat model produces them and reduces them with
the capture code itself (``activations.reduce.reduce_batch``), so the statistics are tested on the
inputs they will meet. Every prompt is a chat template (the same template tokens for every prompt,
position 0 first) around a text of random length; its emoji condition has emojis at random content
positions, its two filler twins ordinary words in the same slots. The nuisance:

- template neurons fire strongly on template tokens, and the fine-tune changes that firing a lot;
- position neurons drift along the text, and the fine-tune changes the drift;
- the fine-tune changes every neuron's content activity a little (``general``);
- the base model already responds to emojis (``emoji response``), which is not a fine-tune effect.

Only the ``planted`` neurons get an emoji-specific change: ``shift`` token SDs added by the merged
model at emoji tokens and nowhere else. ``naive`` also returns the old design's cells: the mean over
all tokens (template included) of each text and of its emoji-*removed* twin (shorter).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from activations.reduce import PADDING, reduce_batch
from activations.roles import TokenRole
from activations.running import TokenStats
from activations.store import CacheLayout, open_writer
from interp.stats.loading import DiffInputs, token_scale

TEMPLATE_HEAD, TEMPLATE_TAIL = 12, 4
REDUCTIONS = ("content_mean", "content_absmean", "marked_mean", "context_mean", "mean")


@dataclass
class Simulation:
    inputs: DiffInputs
    planted: np.ndarray
    """Flat indices of the planted neurons."""
    naive: dict[tuple[str, str], np.ndarray]
    """(model, "emoji" | "removed") -> all-token mean (n, n_layers, d_mlp): the old design's cells."""
    role_counts: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    """(model, condition) -> (n_prompts, 4) tokens per role."""


def _prompt_layout(rng: np.random.Generator) -> tuple[int, np.ndarray]:
    length = int(rng.integers(8, 25))
    n_spans = int(rng.integers(1, 4))
    starts = rng.choice(np.arange(0, length - 1, 2), size=min(n_spans, (length - 1) // 2), replace=False)
    marked = np.zeros(length, dtype=bool)
    for start in starts:
        marked[start : start + 2] = True  # an emoji is two byte-level tokens
    return length, marked


def simulate_study(
    rng: np.random.Generator, n_prompts: int = 60, n_layers: int = 2, d_mlp: int = 200, n_planted: int = 20,
    shift: float = 1.0, planted: np.ndarray | None = None, merged_rng: np.random.Generator | None = None,
) -> Simulation:
    """``planted`` fixes the planted neurons (else ``n_planted`` drawn); ``merged_rng`` draws the merged
    model's token noise apart from the base's, so two calls with equal ``rng`` seeds share the base model
    exactly and differ in their fine-tunes (a study and its null)."""
    m = n_layers * d_mlp
    planted = rng.choice(m, n_planted, replace=False) if planted is None else np.asarray(planted)
    template_level = rng.normal(0, 2, m)
    ft_template = rng.normal(0, 1.5, m) * (rng.random(m) < 0.5)
    slope, ft_slope = rng.normal(0, 0.5, m), rng.normal(0, 0.4, m)
    general = rng.normal(0, 0.3, m)
    emoji_response = rng.normal(0, 1.0, m)
    planted_shift = np.zeros(m)
    planted_shift[planted] = shift
    layouts = [_prompt_layout(rng) for _ in range(n_prompts)]
    prompt_effect = rng.normal(0, 1.0, (n_prompts, m))
    prompt_model = rng.normal(0, 0.3, (n_prompts, m))
    filler_words = {name: [rng.normal(0, 0.5, (len(marked), m)) for _, marked in layouts] for name in ("filler-a", "filler-b")}

    def tokens(i: int, model: str, condition: str) -> tuple[np.ndarray, np.ndarray]:
        length, marked = layouts[i]
        keep = ~marked if condition == "removed" else np.ones(length, dtype=bool)
        merged = model == "merged"
        pos = np.arange(length)[keep][:, None] / 30.0
        content = prompt_effect[i] + merged * (prompt_model[i] + general) + (slope + merged * ft_slope) * pos
        noise = merged_rng if merged and merged_rng is not None else rng
        content = content + noise.normal(0, 1.0, content.shape)
        is_marked = marked[keep]
        if condition == "emoji":
            content[is_marked] += emoji_response + merged * planted_shift
        elif condition in filler_words:
            content[is_marked] += filler_words[condition][i][marked]
        n_template = TEMPLATE_HEAD + TEMPLATE_TAIL
        template = prompt_effect[i] + template_level + merged * ft_template + noise.normal(0, 1.0, (n_template, m))
        acts = np.concatenate([template[:TEMPLATE_HEAD], content, template[TEMPLATE_HEAD:]])
        roles = np.concatenate([np.full(TEMPLATE_HEAD, TokenRole.TEMPLATE),
                                np.where(is_marked & (condition != "removed"), TokenRole.MARKED, TokenRole.CONTENT),
                                np.full(TEMPLATE_TAIL, TokenRole.TEMPLATE)])
        return acts, roles

    cells, defined, stats, naive, role_counts = {}, {}, {}, {}, {}
    for model in ("base", "merged"):
        for condition in ("emoji", "filler-a", "filler-b", "removed"):
            rows = [tokens(i, model, condition) for i in range(n_prompts)]
            width = max(len(r) for _, r in rows)
            acts = torch.zeros(n_prompts, width, m)
            roles = torch.full((n_prompts, width), PADDING)
            for i, (a, r) in enumerate(rows):
                acts[i, : len(r)] = torch.from_numpy(a).float()
                roles[i, : len(r)] = torch.from_numpy(r.astype(np.int64))
            by_layer = {layer: acts[:, :, layer * d_mlp : (layer + 1) * d_mlp] for layer in range(n_layers)}
            result = reduce_batch(by_layer, roles, tuple(range(n_layers)), REDUCTIONS, histogram=True)
            if condition in ("emoji", "removed"):
                naive[model, condition] = result.reductions["mean"]
            if condition == "removed":
                continue
            for name, values in result.reductions.items():
                cells[model, condition, name] = values
                defined[model, condition, name] = np.isfinite(values).all(axis=(1, 2))
            stats[model, condition] = result.stats
            role_counts[model, condition] = result.role_counts
    scales = {c: token_scale([stats["base", c], stats["merged", c]]) for c in ("emoji", "filler-a", "filler-b")}
    inputs = DiffInputs(cells, defined, scales, tuple(range(n_layers)), stats=stats)
    return Simulation(inputs, planted, naive, role_counts)


def write_cache(
    path: Path,
    reductions: dict[str, np.ndarray],
    ids: Sequence[str],
    *,
    texts: Sequence[str] | None = None,
    role_counts: np.ndarray | None = None,
    stats: TokenStats | None = None,
    weights_hash: str = "base-hash",
    model_spec: str = "tiny-base",
    prompt_set: str = "emoji",
    prompt_set_hash: str | None = None,
    template: str = "user",
    layers: Sequence[int] | None = None,
    contexts: Sequence[str] | None = None,
) -> Path:
    """Write a complete cache with the real writer (``activations.store``) from arrays in memory
    (``contexts``: what each prompt was read after, as a writing set records its questions)."""
    first = next(iter(reductions.values()))
    n_prompts, n_layers, d_mlp = first.shape
    if role_counts is None:  # 3 template, 4 content, 2 marked tokens per prompt; NaN rows have no marks
        marked = np.where(np.isnan(first).any(axis=(1, 2)), 0, 2)
        role_counts = np.stack([np.full(n_prompts, 3), np.full(n_prompts, 4), marked, np.zeros(n_prompts, int)], 1)
    role_counts = np.asarray(role_counts, dtype=np.int32)
    if stats is None:
        stats = TokenStats((n_layers, d_mlp))
        stats.all.count, stats.content.count = int(role_counts.sum()), int(role_counts[:, 1:].sum())
        stats.all.m2 = stats.content.m2 = np.ones((n_layers, d_mlp))
        stats.pos0_count = n_prompts
        stats.abs_hist = None
    layout = CacheLayout(n_prompts, n_layers, d_mlp, tuple(reductions), False, chunk_rows=n_prompts,
                         histogram=stats.abs_hist is not None)
    attrs = {"model_spec": model_spec, "weights_hash": weights_hash, "prompt_set": prompt_set,
             "prompt_set_hash": prompt_set_hash or f"hash-{prompt_set}", "tokenizer": "tiny", "template": template,
             "dtype": "float32", "reductions": json.dumps(list(reductions)),
             "layers": np.asarray(list(range(n_layers)) if layers is None else layers, dtype=np.int64),
             "d_mlp": d_mlp, "package_version": "test", "created": "2026-01-01T00:00:00", "batch_size": n_prompts,
             "backend": "native", "capture_config": "{}"}
    path.parent.mkdir(parents=True, exist_ok=True)
    texts = list(texts) if texts is not None else [f"text of {i}" for i in ids]
    writer = open_writer(path, layout, attrs, list(ids), texts, overwrite=True,
                         extras=None if contexts is None else {"contexts": list(contexts)})
    n_tokens = int(role_counts.sum())
    roles = np.repeat(np.tile(np.arange(4), n_prompts), role_counts.ravel()).astype(np.int8)
    writer.write_batch({k: np.asarray(v, np.float32) for k, v in reductions.items()}, role_counts, stats,
                       np.zeros(n_tokens, np.int32), roles)
    writer.finish()
    return path


def write_sim_caches(root: Path, sim: Simulation, tuned: str = "merged") -> tuple[Path, Path]:
    """The simulation's cells as ``root/{base,<tuned>}/{condition}.h5`` (real writer, real stats)."""
    ids = [f"p{i:03d}" for i in range(len(next(iter(sim.role_counts.values()))))]
    for (kind, condition), counts in sim.role_counts.items():
        model = tuned if kind == "merged" else kind
        reductions = {name: values for (m, c, name), values in sim.inputs.cells.items() if (m, c) == (kind, condition)}
        write_cache(root / model / f"{condition}.h5", reductions, ids, role_counts=counts,
                    stats=sim.inputs.stats[kind, condition], weights_hash=f"{model}-hash", model_spec=f"tiny-{model}",
                    prompt_set=condition, texts=[f"{condition} text {i}" for i in ids])
    return root / "base", root / tuned
