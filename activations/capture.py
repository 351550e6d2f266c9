"""``capture``: run a prompt set through a model and store every MLP neuron's activations in HDF5.

1. Resolve the prompts (a ``PromptSet``, a built-in name or a file), the sites of the chosen layers and
   the file identity (capture config, prompt-set hash, weights fingerprint); a finished ``OUT`` is
   never replaced without ``overwrite=True``, and a matching ``OUT.partial.h5`` is resumed.
2. For each batch of ``batch_size`` prompts: apply the template, tokenise with padding (the
   tokenizer's own padding side; either works), and read each layer's neuron vector
   ``(batch, pos, d_mlp)`` from the chosen backend under ``torch.inference_mode``.
3. Reduce each layer over real tokens only: padded positions are dropped by indexing (never
   multiplied by zero, so even a NaN there cannot leak), then ``mean`` / ``max`` are segment
   reductions and ``last`` is each prompt's last real token. The real tokens' moments feed the
   running Welford statistics; with ``store_tokens`` they are also kept, in float16.
4. Write the batch to disk at once (memory stays bounded by one batch); after the last batch the
   file is renamed onto ``OUT`` and returned opened for reading.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from activations.backends import BACKENDS, ModelBatch, open_backend
from activations.models import LoadedModel, weights_fingerprint
from activations.prompt_sets import (
    DEFAULT_TEMPLATE,
    TEMPLATES,
    PromptSet,
    apply_template,
    load_prompt_set,
    template_adds_special_tokens,
)
from activations.sites import neuron_sites
from activations.store import REDUCTIONS, SCHEMA, ActivationCache, CacheLayout, RunningStats, open_cache, open_writer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureConfig:
    """What to record and how; stored in the file (attr ``capture_config``) for provenance and resume."""

    layers: tuple[int, ...] | None = None
    """Layers to record, in this order; None records all of them."""
    reductions: tuple[str, ...] = REDUCTIONS
    """Per-prompt reductions over real tokens: any of ``mean``, ``max``, ``last``."""
    batch_size: int = 16
    """Prompts per forward pass; also the HDF5 chunk height and the resume granularity."""
    template: str = DEFAULT_TEMPLATE
    """``raw`` | ``user`` | ``assistant`` (see ``activations.prompt_sets.apply_template``)."""
    backend: str = "native"
    """``native`` (our hooks) | ``tlens`` (TransformerLens bridge) | ``nnsight``."""
    store_tokens: bool = False
    """Also keep every token's activations (float16, ``/tokens``); files grow with prompt length."""

    def __post_init__(self) -> None:
        if not self.reductions or len(set(self.reductions)) != len(self.reductions):
            raise ValueError(f"reductions {self.reductions} must be a non-empty list without repeats")
        unknown = [name for name in self.reductions if name not in REDUCTIONS]
        if unknown:
            raise ValueError(f"unknown reductions {unknown}; choose from {', '.join(REDUCTIONS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; choose one of {', '.join(TEMPLATES)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.layers is not None and (not self.layers or len(set(self.layers)) != len(self.layers)):
            raise ValueError(f"layers {self.layers} must be a non-empty list without repeats (or None for all)")


class TokenLayout(NamedTuple):
    """Where each prompt's real tokens sit once a batch's padded positions are dropped."""

    n_tokens: Int[Tensor, " batch"]
    owner: Int[Tensor, " n_real"]
    """The prompt each real token belongs to (tokens stay in (prompt, position) order)."""
    mean_weights: Float[Tensor, "batch n_real"]
    """``1 / n_tokens`` where a token belongs to the prompt, else 0: ``mean_weights @ real`` is the mean."""
    last: Int[Tensor, " batch"]
    """Row of each prompt's last real token."""

    @classmethod
    def from_mask(cls, mask: Bool[Tensor, "batch pos"]) -> TokenLayout:
        n_tokens = mask.sum(1)
        owner = torch.repeat_interleave(torch.arange(len(n_tokens), device=mask.device), n_tokens)
        weights = torch.zeros(len(n_tokens), len(owner), device=mask.device)
        weights[owner, torch.arange(len(owner), device=mask.device)] = 1.0 / n_tokens[owner].float()
        return cls(n_tokens, owner, weights, n_tokens.cumsum(0) - 1)


class BatchResult(NamedTuple):
    """What one batch adds to the file."""

    reductions: dict[str, np.ndarray]
    """name -> ``(batch, n_layers, d_mlp)`` float32."""
    stats: RunningStats
    """Moments over the batch's real tokens, ``(n_layers, d_mlp)``."""
    token_acts: np.ndarray | None
    """``(n_real_tokens, n_layers, d_mlp)`` float16, when tokens are stored."""


def reduce_layer(
    real: Float[Tensor, "n_real d_mlp"], layout: TokenLayout, reductions: tuple[str, ...]
) -> dict[str, Float[Tensor, "batch d_mlp"]]:
    """Mean / max / last of each prompt's real tokens (padding was dropped before, whatever its side)."""
    out = {}
    if "mean" in reductions:
        out["mean"] = layout.mean_weights @ real
    if "max" in reductions:
        index = layout.owner[:, None].expand_as(real)  # a view: no copy
        start = torch.full((len(layout.n_tokens), real.shape[1]), -torch.inf, device=real.device)
        out["max"] = start.scatter_reduce_(0, index, real, "amax")
    if "last" in reductions:
        out["last"] = real[layout.last]
    return out


def reduce_batch(
    acts: dict[int, Float[Tensor, "batch pos d_mlp"]], mask: Bool[Tensor, "batch pos"], config: CaptureConfig
) -> BatchResult:
    """Reductions, token moments and (optionally) float16 token rows for one batch, layer by layer.

    Padded positions are dropped by indexing, never multiplied by zero, so whatever a backend leaves
    there (even NaN) cannot leak. Each step works in place on the one copy of the real tokens,
    because on CPU a fresh large temporary per layer costs more than the arithmetic.
    """
    layout = TokenLayout.from_mask(mask)
    n_real = int(layout.n_tokens.sum())
    per_layer: dict[str, list[Tensor]] = {name: [] for name in config.reductions}
    means, m2s, tokens = [], [], []
    for layer in config.layers or tuple(acts):
        real = acts[layer][mask].float()  # (n_real, d_mlp): a copy we own
        reduced = reduce_layer(real, layout, config.reductions)
        for name, values in reduced.items():
            per_layer[name].append(values)
        if config.store_tokens:
            tokens.append(real.half())
        # The batch mean (float64) from the per-prompt means; then centre in place before squaring.
        prompt_means = reduced["mean"] if "mean" in reduced else layout.mean_weights @ real
        mean = prompt_means.double().mul_(layout.n_tokens[:, None]).sum(0) / n_real
        means.append(mean)
        m2s.append(real.sub_(mean.float()).square_().sum(0).double())
    return BatchResult(
        {name: torch.stack(values, 1).cpu().numpy() for name, values in per_layer.items()},
        RunningStats.from_moments(n_real, torch.stack(means).cpu().numpy(), torch.stack(m2s).cpu().numpy()),
        torch.stack(tokens, 1).cpu().numpy() if config.store_tokens else None,
    )


def _as_prompt_set(prompts: PromptSet | str | Path | list[str]) -> PromptSet:
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, (list, tuple)):
        return PromptSet.from_texts(list(prompts))
    return load_prompt_set(prompts)


def _tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str], template: str, device: torch.device) -> ModelBatch:
    rendered = [apply_template(tokenizer, text, template) for text in texts]
    encoded = tokenizer(rendered, padding=True, return_tensors="pt",
                        add_special_tokens=template_adds_special_tokens(template))
    return ModelBatch(encoded["input_ids"].to(device), encoded["attention_mask"].to(device))


def _file_attrs(config: CaptureConfig, prompts: PromptSet, model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                model_spec: str, d_mlp: int) -> dict[str, object]:
    try:
        version = metadata.version("neurodiff")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "model_spec": model_spec,
        "weights_hash": weights_fingerprint(model),
        "prompt_set": prompts.name,
        "prompt_set_hash": prompts.sha,
        "tokenizer": str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__),
        "template": config.template,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "reductions": json.dumps(list(config.reductions)),
        "layers": np.asarray(config.layers, dtype=np.int64),
        "d_mlp": d_mlp,
        "package_version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "batch_size": config.batch_size,
        "backend": config.backend,
        "capture_config": json.dumps(dataclasses.asdict(config)),
    }


def capture(
    model: nn.Module | LoadedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    prompts: PromptSet | str | Path | list[str],
    out: str | Path,
    *,
    layers: list[int] | tuple[int, ...] | None = None,
    reductions: tuple[str, ...] | list[str] = REDUCTIONS,
    batch_size: int = 16,
    template: str = DEFAULT_TEMPLATE,
    backend: str = "native",
    store_tokens: bool = False,
    overwrite: bool = False,
    model_spec: str | None = None,
) -> ActivationCache:
    """Record the MLP neurons of ``model`` on ``prompts`` into the HDF5 cache ``out`` and open it.

    ``model`` may be a ``LoadedModel`` (then ``tokenizer`` may be None and ``model_spec`` defaults to
    its spec). Merged models and peft-wrapped ones work alike. See the module docstring for the steps.
    """
    if isinstance(model, LoadedModel):
        tokenizer = tokenizer or model.tokenizer
        model_spec = model_spec or model.spec
        model = model.model
    if tokenizer is None:
        raise ValueError("capture needs the model's tokenizer; pass it, or pass a LoadedModel")
    out = Path(out)
    if out.exists() and not overwrite:  # before any work: fail fast
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    prompt_set = _as_prompt_set(prompts)
    sites = neuron_sites(model, None if layers is None else list(layers))
    config = CaptureConfig(tuple(site.layer for site in sites), tuple(reductions), batch_size, template,
                           backend, store_tokens)
    widths = {site.d_mlp for site in sites}
    if len(widths) != 1:
        raise ValueError(f"layers {config.layers} have different widths {sorted(widths)}; capture them separately")
    d_mlp = widths.pop()
    model_spec = model_spec or str(getattr(getattr(model, "config", None), "name_or_path", "") or "unknown")
    attrs = _file_attrs(config, prompt_set, model, tokenizer, model_spec, d_mlp)
    layout = CacheLayout(len(prompt_set), len(sites), d_mlp, config.reductions, store_tokens,
                         chunk_rows=batch_size)
    writer = open_writer(out, layout, attrs, list(prompt_set.ids), list(prompt_set.texts), overwrite=overwrite)
    device = next(model.parameters()).device
    starts = range(writer.n_done, len(prompt_set), batch_size)
    try:
        with ExitStack() as stack, torch.inference_mode():
            run_batch = stack.enter_context(open_backend(backend, model, tokenizer, sites))
            bar = stack.enter_context(tqdm(total=len(prompt_set), initial=writer.n_done, unit="prompt",
                                           desc=f"capture {prompt_set.name}"))
            for start in starts:
                texts = list(prompt_set.texts[start : start + batch_size])
                batch = _tokenize(tokenizer, texts, template, device)
                mask = batch.attention_mask.bool()
                n_tokens = mask.sum(1).cpu().numpy().astype(np.int32)
                if (n_tokens == 0).any():
                    empty = [prompt_set.ids[start + i] for i in np.flatnonzero(n_tokens == 0)]
                    raise ValueError(f"prompts {empty} tokenise to nothing; remove them or use another template")
                result = reduce_batch(run_batch(batch), mask, config)
                token_ids = batch.input_ids[mask].cpu().numpy().astype(np.int32) if store_tokens else None
                writer.write_batch(result.reductions, n_tokens, result.stats, result.token_acts, token_ids)
                bar.update(len(texts))
        path = writer.finish()
    finally:
        writer.close()
    log.info("wrote %s (%d prompts, %d layers x %d neurons, schema %s)", path, len(prompt_set),
             len(sites), d_mlp, SCHEMA)
    return open_cache(path)
