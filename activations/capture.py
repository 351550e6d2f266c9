"""``capture``: run a prompt set through a model and store every MLP neuron's activations in HDF5.

1. Resolve the prompts (a ``PromptSet``, a built-in name, a file or a list of strings), the sites of
   the chosen layers and the file identity (capture config, prompt-set hash, weights fingerprint); a
   finished ``OUT`` is never replaced without ``overwrite=True``, and a matching ``OUT.partial.h5``
   is resumed. ``out=None`` captures into memory instead (nothing touches the disk).
2. Encode every prompt in its template with token roles (``activations.roles``: template, content,
   marked, control); a prompt longer than the model's context is an error that names it.
3. For each batch of ``batch_size`` prompts: pad (the tokenizer's padding side; either works) and
   read each layer's neuron vector ``(batch, pos, d_mlp)`` from the chosen backend under
   ``torch.inference_mode``.
4. Reduce each layer over token scopes (``activations.reduce``): by default over content tokens
   only, so the chat template and position 0 never enter a prompt's value; accumulate the token
   statistics (moments, max |a|, position-0 |a|, |a| histogram); with ``store_tokens`` keep every
   token in float16.
5. Write the batch at once (memory stays bounded by one batch); after the last batch the file is
   verified, renamed onto ``OUT`` and returned opened for reading.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from contextlib import ExitStack
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from activations.backends import ModelBatch, open_backend
from activations.config import CaptureConfig
from activations.context import context_length
from activations.models import LoadedModel, weights_fingerprint
from activations.prefix import MIN_PREFIX, prefixed_runner, shared_prefix
from activations.prompt_sets import PromptSet, load_prompt_set
from activations.reader import ActivationCache, open_cache
from activations.reduce import PADDING, reduce_batch
from activations.roles import EncodedPrompt, encode_prompt_set
from activations.sites import NeuronSite, neuron_sites
from activations.atomic_io import refuse_existing
from activations.store import SCHEMA, CacheLayout, open_writer, partial_path

log = logging.getLogger(__name__)


class CaptureInterrupted(KeyboardInterrupt):
    """Ctrl-C during a capture into a file; the message says where the finished batches are kept and
    that a rerun resumes from them (a ``KeyboardInterrupt`` still, so callers stop as before)."""


def as_prompt_set(prompts: PromptSet | str | Path | list[str]) -> PromptSet:
    """A ``PromptSet`` from a set, a built-in name, a file path or a list of strings."""
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, (list, tuple)):
        return PromptSet.from_texts(list(prompts))
    return load_prompt_set(prompts)


def check_lengths(encoded: list[EncodedPrompt], ids: tuple[str, ...], limit: int | None) -> None:
    """Refuse prompts that tokenise to nothing or to more tokens than the model's context."""
    empty = [prompt_id for prompt_id, e in zip(ids, encoded) if len(e) == 0]
    if empty:
        raise ValueError(f"prompts {empty[:5]} tokenise to nothing; remove them or use another template")
    if limit is not None:
        long = [(prompt_id, len(e)) for prompt_id, e in zip(ids, encoded) if len(e) > limit]
        if long:
            raise ValueError(f"{len(long)} prompts are longer than the model's context of {limit} tokens (first: "
                             f"{long[0][0]!r}, {long[0][1]} tokens with its template); shorten or split them")


def check_vocabulary(encoded: list[EncodedPrompt], ids: tuple[str, ...], model: nn.Module) -> None:
    """Refuse token ids the model has no embedding for (a tokenizer of another model): the forward
    would fail deep inside the embedding with an index error that names neither."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    size = getattr(embeddings, "num_embeddings", None)
    if size is None:
        return
    over = [(prompt_id, max(e.ids)) for prompt_id, e in zip(ids, encoded) if e.ids and max(e.ids) >= size]
    if over:
        raise ValueError(f"{len(over)} prompts tokenise to ids beyond the model's vocabulary of {size} (first: "
                         f"{over[0][0]!r}, id {over[0][1]}); pass the model's own tokenizer")


def pad_batch(encoded: list[EncodedPrompt], pad_id: int, side: str, device: torch.device) -> tuple[ModelBatch, torch.Tensor]:
    """Padded ids and mask, and the ``(batch, pos)`` roles (``PADDING`` at padded positions)."""
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    roles = torch.full((len(encoded), width), PADDING, dtype=torch.long)
    for row, e in enumerate(encoded):
        cols = slice(width - len(e), width) if side == "left" else slice(0, len(e))
        ids[row, cols] = torch.tensor(e.ids)
        roles[row, cols] = torch.tensor(e.roles)
    return ModelBatch(ids.to(device), (roles >= 0).long().to(device)), roles.to(device)


def _file_attrs(config: CaptureConfig, prompts: PromptSet, model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                model_spec: str, sites: list[NeuronSite]) -> dict[str, object]:
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
        "layers": np.asarray([site.layer for site in sites], dtype=np.int64),
        "d_mlp": sites[0].d_mlp,
        "package_version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "batch_size": config.batch_size,
        "backend": config.backend,
        "capture_config": json.dumps(dataclasses.asdict(config)),
        # Rows of a mixture-of-experts capture are sites, several per layer: name them.
        **({"sites": json.dumps([site.name for site in sites]),
            "experts": np.asarray([-1 if site.expert is None else site.expert for site in sites], dtype=np.int64)}
           if any(site.key != site.layer for site in sites) else {}),
    }


def _extras(prompts: PromptSet) -> dict[str, list[str]]:
    extras = {}
    if prompts.marks is not None:
        extras["marks"] = [json.dumps([list(span) for span in spans]) for spans in prompts.marks]
    if prompts.controls is not None:
        extras["controls"] = [json.dumps([list(span) for span in spans]) for spans in prompts.controls]
    if prompts.contexts is not None:
        extras["contexts"] = list(prompts.contexts)
    return extras


def _chosen_sites(model: nn.Module, config: CaptureConfig) -> list[NeuronSite]:
    sites = neuron_sites(model, None if config.layers is None else list(config.layers))
    if config.sites == "all":
        return sites
    kept = [site for site in sites if (site.expert is not None) == (config.sites == "experts")
            and site.key != site.layer]  # a dense layer site is neither a routed nor a shared expert
    if not kept:
        raise ValueError(f"sites={config.sites!r} keeps none of this model's sites ({sites[0].name}, ...); "
                         "it applies to mixture-of-experts models: use sites='all'")
    return kept


def capture(
    model: nn.Module | LoadedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    prompts: PromptSet | str | Path | list[str],
    out: str | Path | None,
    *,
    config: CaptureConfig | None = None,
    overwrite: bool = False,
    model_spec: str | None = None,
    extra_attrs: dict[str, object] | None = None,
    **options: object,
) -> ActivationCache:
    """Record the MLP neurons of ``model`` on ``prompts`` into the HDF5 cache ``out`` (None: in
    memory) and open it. Options are ``CaptureConfig``'s fields, given as ``config`` or as keywords
    (``layers=[5, 6]``, ``reductions=(...)``, ``template="raw"``, ...).

    ``model`` may be a ``LoadedModel`` (then ``tokenizer`` may be None and ``model_spec`` defaults to
    its spec). Merged models and peft-wrapped ones work alike. See the module docstring for the steps.
    ``extra_attrs`` are stored beside the file's own attrs (``activations.shards`` marks shards so).
    """
    if isinstance(model, LoadedModel):
        tokenizer = tokenizer or model.tokenizer
        model_spec = model_spec or model.spec
        model = model.model
    if tokenizer is None:
        raise ValueError("capture needs the model's tokenizer; pass it, or pass a LoadedModel")
    config = dataclasses.replace(config or CaptureConfig(), **options)  # type: ignore[arg-type]
    out = Path(out) if out is not None else None
    if out is not None:  # before any work: fail fast
        refuse_existing(out, overwrite)
    prompt_set = as_prompt_set(prompts)
    sites = _chosen_sites(model, config)
    config = dataclasses.replace(config, layers=tuple(dict.fromkeys(site.layer for site in sites)))
    widths = {site.d_mlp for site in sites}
    if len(widths) != 1:
        by_width = {width: [site.name for site in sites if site.d_mlp == width][:2] for width in sorted(widths)}
        raise ValueError(f"the sites of layers {config.layers} have different widths ({by_width}); a cache holds "
                         "one width: capture layers of one width separately, or routed and shared experts apart "
                         "(--sites experts, --sites shared)")
    d_mlp = widths.pop()
    keys = tuple(site.key for site in sites)
    sparse = frozenset(site.key for site in sites if site.expert is not None)  # rows that see routed tokens only
    encoded = encode_prompt_set(tokenizer, prompt_set, config.template)
    check_lengths(encoded, prompt_set.ids, context_length(model))
    check_vocabulary(encoded, prompt_set.ids, model)
    model_spec = model_spec or str(getattr(getattr(model, "config", None), "name_or_path", "") or "unknown")
    attrs = {**_file_attrs(config, prompt_set, model, tokenizer, model_spec, sites), **(extra_attrs or {})}
    layout = CacheLayout(len(prompt_set), len(sites), d_mlp, config.reductions, config.store_tokens,
                         chunk_rows=config.batch_size, histogram=config.histogram, sparse=bool(sparse))
    writer = open_writer(out, layout, attrs, list(prompt_set.ids), list(prompt_set.texts),
                         extras=_extras(prompt_set), overwrite=overwrite)
    device = next(model.parameters()).device
    side = getattr(tokenizer, "padding_side", "right")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefix = shared_prefix([e.ids for e in encoded]) if config.shared_prefix and config.backend == "native" else 0
    done = writer.n_done
    try:
        with ExitStack() as stack, torch.inference_mode():
            if prefix >= MIN_PREFIX:
                side = "right"  # the suffixes follow the shared prefix directly
                run_batch = stack.enter_context(prefixed_runner(model, sites, encoded[0].ids[:prefix]))
            else:
                run_batch = stack.enter_context(open_backend(config.backend, model, tokenizer, sites))
            bar = stack.enter_context(tqdm(total=len(prompt_set), initial=writer.n_done, unit="prompt",
                                           desc=f"capture {prompt_set.name}"))
            for start in range(writer.n_done, len(prompt_set), config.batch_size):
                chunk = encoded[start : start + config.batch_size]
                batch, roles = pad_batch(chunk, pad_id, side, device)
                result = reduce_batch(run_batch(batch), roles, keys, config.reductions, store_tokens=config.store_tokens,
                                      histogram=config.histogram, sparse=sparse)
                real = roles >= 0
                writer.write_batch(result.reductions, result.role_counts, result.stats,
                                   batch.input_ids[real].cpu().numpy().astype(np.int32),
                                   roles[real].cpu().numpy().astype(np.int8), result.token_acts, result.routed_counts)
                done = start + len(chunk)
                bar.update(len(chunk))
        path = writer.finish()
    except KeyboardInterrupt:
        writer.close()
        if out is None:
            raise
        raise CaptureInterrupted(f"capture of {out} stopped; {done} of {len(prompt_set)} prompts are captured in "
                                 f"{partial_path(out)}: rerun the same command to resume from there") from None
    except BaseException:
        writer.close()
        raise
    log.info("captured %s (%d prompts, %d sites x %d neurons, schema %s)", path or "into memory",
             len(prompt_set), len(sites), d_mlp, SCHEMA)
    if path is None:
        return ActivationCache(None, writer.file)
    return open_cache(path)
