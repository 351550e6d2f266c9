"""Data-parallel capture: each rank captures a contiguous block of whole batches into its own shard,
and a merge writes one cache equal to a single-process capture.

1. ``shard_plan`` splits the prompts into one block of whole batches per rank
   (``activations.distributed.block_bounds`` over batches), so every rank runs exactly the batches a
   single process would run, with the same padding.
2. ``capture_shard`` writes ``OUT.shard-R-of-N.h5`` with ``capture`` itself: resumable, locked and
   verified like any cache, and marked with its block and the whole prompt set's hash.
3. ``merge_shards`` checks the shards tile the prompt set (same world, same capture identity, blocks
   in order, nothing missing) and writes ``OUT`` through the ordinary cache writer: per-prompt
   arrays and token rows copied in prompt order, one chunk at a time (memory stays bounded), and
   each shard's token statistics merged once (Chan's parallel update; counts, maxima and histograms
   add exactly, means and M2 agree with one stream to float64 rounding). Shards are removed only
   after the merged file is verified. A merge killed midway starts again (it is a copy).
4. ``distributed_capture`` does 2 then 3 under ``torchrun`` (rank 0 merges, every rank waits), and is
   plain ``capture`` in one process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from activations import distributed
from activations.atomic_io import refuse_existing
from activations.capture import CaptureConfig, as_prompt_set, capture
from activations.models import LoadedModel, weights_fingerprint
from activations.prompt_sets import PromptSet
from activations.reader import ActivationCache, open_cache
from activations.running import TokenStats
from activations.store import IDENTITY_ATTRS, CacheLayout, decode_attr, open_writer

log = logging.getLogger(__name__)

SHARD_ATTRS = ("shard_rank", "shard_world", "shard_start", "shard_stop", "full_prompt_set", "full_prompt_set_hash",
               "full_n_prompts")


@dataclass(frozen=True)
class ShardBlock:
    """One rank's prompts: rows ``[start, stop)`` of the whole set."""

    rank: int
    world: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def shard_plan(n_prompts: int, world: int, batch_size: int) -> list[ShardBlock]:
    """Contiguous blocks of whole batches, one per rank (module docstring, step 1)."""
    n_batches = math.ceil(n_prompts / batch_size)
    return [ShardBlock(rank, world, min(a * batch_size, n_prompts), min(b * batch_size, n_prompts))
            for rank, (a, b) in enumerate(distributed.block_bounds(n_batches, world))]


def shard_path(out: str | Path, rank: int, world: int) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{rank}-of-{world}.h5")


def capture_shard(model: nn.Module | LoadedModel, tokenizer: PreTrainedTokenizerBase | None,
                  prompts: PromptSet | str | Path | list[str], out: str | Path, rank: int, world: int, *,
                  config: CaptureConfig | None = None, overwrite: bool = False, model_spec: str | None = None,
                  **options: object) -> Path | None:
    """Capture rank ``rank``'s block into its shard file (None when the block is empty)."""
    config = dataclasses.replace(config or CaptureConfig(), **options)  # type: ignore[arg-type]
    prompt_set = as_prompt_set(prompts)
    block = shard_plan(len(prompt_set), world, config.batch_size)[rank]
    if not len(block):
        log.info("rank %d has no prompts (%d prompts, %d ranks, batch %d)", rank, len(prompt_set), world,
                 config.batch_size)
        return None
    path = shard_path(out, rank, world)
    if path.exists() and not overwrite and _finished_shard(path, model, prompt_set, block, config):
        log.info("rank %d: %s is already captured with these settings; reusing it", rank, path)
        return path
    marks = {"shard_rank": rank, "shard_world": world, "shard_start": block.start, "shard_stop": block.stop,
             "full_prompt_set": prompt_set.name, "full_prompt_set_hash": prompt_set.sha,
             "full_n_prompts": len(prompt_set)}
    sub = prompt_set.subset(range(block.start, block.stop), name=f"{prompt_set.name}[{block.start}:{block.stop}]")
    capture(model, tokenizer, sub, path, config=config, overwrite=overwrite, model_spec=model_spec,
            extra_attrs=marks).close()
    return path


def _finished_shard(path: Path, model: nn.Module | LoadedModel, prompt_set: PromptSet, block: ShardBlock,
                    config: CaptureConfig) -> bool:
    """True if ``path`` is this very shard (a rerun after the merge failed); an unrelated file at the
    shard's name is an error, never silently replaced."""
    bare = model.model if isinstance(model, LoadedModel) else model
    with open_cache(path) as cache:
        recorded = json.loads(cache.attrs["capture_config"])
        wanted = dataclasses.asdict(config)
        same = (cache.attrs.get("full_prompt_set_hash") == prompt_set.sha
                and (cache.attrs.get("shard_start"), cache.attrs.get("shard_stop")) == (block.start, block.stop)
                and cache.attrs.get("weights_hash") == weights_fingerprint(bare)
                and all(recorded[k] == (list(v) if isinstance(v, tuple) else v) for k, v in wanted.items()
                        if not (k == "layers" and v is None)))
    if not same:
        raise FileExistsError(f"{path} is a shard of another capture (model, prompts or options differ); delete it, "
                              "or pass overwrite=True (--overwrite) to replace it")
    return True


def find_shards(out: str | Path) -> list[Path]:
    """The shard files of ``out`` on disk, by rank."""
    out = Path(out)
    pattern = re.compile(rf"^{re.escape(out.stem)}\.shard-(\d+)-of-(\d+)\.h5$")
    found = [(int(m.group(1)), p) for p in out.parent.glob(f"{out.stem}.shard-*.h5") if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def _check_tiling(out: Path, caches: list[ActivationCache]) -> dict[str, object]:
    """The merged file's attrs, after checking that the shards tile one prompt set (step 3)."""
    if not caches:
        raise FileNotFoundError(f"no shards of {out} ({out.stem}.shard-R-of-N.h5); capture them first "
                                "(`torchrun --nproc-per-node N -m interp.cli cache ... --out OUT`)")
    first = caches[0].attrs
    missing_marks = [c.label for c in caches if any(key not in c.attrs for key in SHARD_ATTRS)]
    if missing_marks:
        raise ValueError(f"{missing_marks} are not shards written by capture_shard (no shard attrs)")
    for key in ("shard_world", "full_prompt_set_hash", "full_n_prompts", *[k for k in IDENTITY_ATTRS
                                                                          if k != "prompt_set_hash"]):
        values = {str(c.attrs[key]) for c in caches}
        if len(values) > 1:
            raise ValueError(f"shards of {out} differ in {key} ({sorted(values)}); they come from different runs: "
                             "delete them and capture again")
    world, n = int(first["shard_world"]), int(first["full_n_prompts"])
    batch = json.loads(first["capture_config"])["batch_size"]
    expected = [b for b in shard_plan(n, world, batch) if len(b)]
    found = [(int(c.attrs["shard_rank"]), int(c.attrs["shard_start"]), int(c.attrs["shard_stop"])) for c in caches]
    if found != [(b.rank, b.start, b.stop) for b in expected]:
        absent = sorted({b.rank for b in expected} - {rank for rank, _, _ in found})
        raise ValueError(f"shards of {out} do not cover the {n} prompts: expected ranks "
                         f"{[b.rank for b in expected]} of {world}, found {[r for r, _, _ in found]}"
                         + (f" (ranks {absent} missing: rerun the capture with {world} processes to finish them)"
                            if absent else ""))
    attrs = {key: value for key, value in first.items() if key not in SHARD_ATTRS
             and key not in ("schema", "complete", "n_done")}
    attrs.update(prompt_set=first["full_prompt_set"], prompt_set_hash=first["full_prompt_set_hash"],
                 layers=np.asarray(caches[0].layers, dtype=np.int64))
    return attrs


def _extras(caches: list[ActivationCache]) -> dict[str, list[str]]:
    names = [name for name in ("marks", "controls", "contexts") if f"prompts/{name}" in caches[0]._file]
    return {name: [s.decode() if isinstance(s, bytes) else str(s) for c in caches for s in c._file[f"prompts/{name}"][()]]
            for name in names}


def merge_shards(out: str | Path, shards: Sequence[str | Path] | None = None, *, overwrite: bool = False,
                 keep_shards: bool = False) -> ActivationCache:
    """Merge ``out``'s shards (found on disk when ``shards`` is None) into ``out`` (step 3) and open it."""
    out = Path(out)
    refuse_existing(out, overwrite)
    paths = [Path(p) for p in shards] if shards is not None else find_shards(out)
    caches = [open_cache(p) for p in paths]
    try:
        caches.sort(key=lambda c: int(c.attrs.get("shard_rank", -1)))
        attrs = _check_tiling(out, caches)
        f0 = caches[0]._file
        layout = CacheLayout(sum(len(c) for c in caches), len(caches[0].layers), caches[0].d_mlp, caches[0].reductions,
                             "tokens/acts" in f0, chunk_rows=int(attrs["batch_size"]),
                             histogram="abs_hist" in f0["running"], sparse="prompts/routed_counts" in f0)
        writer = open_writer(out, layout, attrs, [i for c in caches for i in c.prompt_ids],
                             [t for c in caches for t in c.texts], extras=_extras(caches), overwrite=overwrite)
        try:
            with tqdm(total=layout.n_prompts, unit="prompt", desc=f"merge {out.name}") as bar:
                for cache in caches:
                    _copy_shard(writer, cache, layout)
                    bar.update(len(cache))
            path = writer.finish()
        except BaseException:
            writer.close()
            raise
    finally:
        for cache in caches:
            cache.close()
    if not keep_shards:
        for p in paths:
            p.unlink()
            p.with_name(f".{p.name}.lock").unlink(missing_ok=True)  # the shard's writer lock, long released
    log.info("merged %d shards into %s", len(paths), path)
    return open_cache(out)


def _copy_shard(writer, cache: ActivationCache, layout: CacheLayout) -> None:
    f = cache._file
    stats = cache.token_stats()
    empty = TokenStats((layout.n_layers, layout.d_mlp), histogram=layout.histogram, per_row=layout.sparse)
    offsets = f["tokens/offsets"][()]
    starts = list(range(0, len(cache), layout.chunk_rows))
    for start in starts:
        stop = min(start + layout.chunk_rows, len(cache))
        rows = slice(int(offsets[start]), int(offsets[stop]))
        writer.write_batch({name: f[f"acts/{name}"][start:stop] for name in layout.reductions},
                           f["prompts/role_counts"][start:stop],
                           stats if start == starts[-1] else empty,  # the shard's statistics, merged once
                           f["tokens/ids"][rows], f["tokens/roles"][rows],
                           f["tokens/acts"][rows] if layout.store_tokens else None,
                           f["prompts/routed_counts"][start:stop] if layout.sparse else None)


def distributed_capture(model: nn.Module | LoadedModel, tokenizer: PreTrainedTokenizerBase | None,
                        prompts: PromptSet | str | Path | list[str], out: str | Path, *,
                        config: CaptureConfig | None = None, overwrite: bool = False, model_spec: str | None = None,
                        keep_shards: bool = False, **options: object) -> ActivationCache:
    """Capture on every rank of the current process group and merge on rank 0 (step 4); each rank
    gets the merged cache opened for reading. In one process this is ``capture``."""
    w = distributed.world()
    if w.size == 1:
        return capture(model, tokenizer, prompts, out, config=config, overwrite=overwrite, model_spec=model_spec,
                       **options)
    out = Path(out)
    refuse_existing(out, overwrite)  # every rank, before any work
    capture_shard(model, tokenizer, prompts, out, w.rank, w.size, config=config, overwrite=overwrite,
                  model_spec=model_spec, **options)
    distributed.barrier()
    if w.is_main:
        merge_shards(out, overwrite=overwrite, keep_shards=keep_shards).close()
    distributed.barrier()
    return open_cache(out)
