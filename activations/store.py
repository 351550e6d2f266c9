"""The activation cache on disk: one HDF5 file per (model, prompt set), schema ``neurodiff.activations/1``.

Writing (``CacheWriter``), so that memory is bounded by one batch and a killed run loses at most one:
1. Everything goes to ``OUT.partial.h5`` beside the target. Its datasets are created at full size up
   front (reductions are ``[n_prompts, n_layers, d_mlp]``; per-token rows grow), prompt ids and texts
   are written at once, and the attrs record what is being captured.
2. Each finished batch is written into its rows, merged into the running Welford statistics (kept in
   the file, not in RAM), then ``n_done`` is advanced and the file flushed.
3. A rerun finds the partial file; if its identity (capture config, prompt-set hash, weights
   fingerprint) matches, it continues from ``n_done``; if not, it stops with an error that says which
   of them differ. A partial file that cannot be read, or whose token count disagrees with its rows
   (killed mid-batch), is discarded and the capture starts again.
4. When the last batch is in, ``complete`` is set and the file is renamed onto ``OUT`` with
   ``os.replace`` (atomic): a file named ``OUT`` is always a finished cache.

Reading: ``open_cache(path)`` checks that the file is HDF5, carries this schema and is complete, and
turns anything else into one ``ValueError`` that names the file and the problem.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

log = logging.getLogger(__name__)

SCHEMA = "neurodiff.activations/1"
REDUCTIONS = ("mean", "max", "last")
IDENTITY_ATTRS = ("capture_config", "prompt_set_hash", "weights_hash")
"""Attrs that must match for a rerun to continue a partial file."""
_STR = h5py.string_dtype("utf-8")


class RunningStats:
    """Mean and sum of squared deviations (M2) per element over a stream of samples.

    ``update(batch)`` folds in a batch whose first axis is samples; ``merge(other)`` combines two
    streams (Chan et al.'s parallel form of Welford's update), so shards or batches can be reduced
    in any grouping and give the same answer. All sums are kept in float64.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = 0
        self.mean = np.zeros(shape, dtype=np.float64)
        self.m2 = np.zeros(shape, dtype=np.float64)

    @classmethod
    def from_moments(cls, count: int, mean: np.ndarray, m2: np.ndarray) -> RunningStats:
        stats = cls(mean.shape)
        stats.count, stats.mean, stats.m2 = int(count), np.asarray(mean, np.float64), np.asarray(m2, np.float64)
        return stats

    @classmethod
    def from_batch(cls, batch: Float[Tensor, "n ..."] | np.ndarray) -> RunningStats:
        """Exact moments of one batch (centred before squaring, so no catastrophic cancellation)."""
        samples = torch.as_tensor(batch).float()
        count = samples.shape[0]
        if count == 0:
            return cls(tuple(samples.shape[1:]))
        mean = samples.sum(0, dtype=torch.float64) / count
        m2 = (samples - mean.float()).square().sum(0, dtype=torch.float64)
        return cls.from_moments(count, mean.cpu().numpy(), m2.cpu().numpy())

    def update(self, batch: Float[Tensor, "n ..."] | np.ndarray) -> None:
        self.merge(RunningStats.from_batch(batch))

    def merge(self, other: RunningStats) -> None:
        if other.mean.shape != self.mean.shape:
            raise ValueError(f"cannot merge running stats of shape {other.mean.shape} into {self.mean.shape}")
        total = self.count + other.count
        if other.count == 0:
            return
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total

    @property
    def var(self) -> np.ndarray:
        """Sample variance (``m2 / (count - 1)``); NaN with fewer than two samples."""
        if self.count < 2:
            return np.full_like(self.mean, np.nan)
        return self.m2 / (self.count - 1)


@dataclass(frozen=True)
class CacheLayout:
    """The shape of a cache file: fixed before the first batch is written."""

    n_prompts: int
    """Number of prompts (rows of every reduction)."""
    n_layers: int
    """Number of recorded layers."""
    d_mlp: int
    """Neurons per layer."""
    reductions: tuple[str, ...]
    """Per-prompt reductions stored under ``/acts``."""
    store_tokens: bool
    """Whether ``/tokens`` holds every token's activations (float16)."""
    chunk_rows: int
    """Prompts per HDF5 chunk; equal to the batch size so each batch fills whole chunks."""
    compression: str = "lzf"
    """HDF5 filter for activation datasets: ``lzf`` (fast, h5py built-in) or ``gzip``."""


def partial_path(out: Path) -> Path:
    """``acts.h5`` -> ``acts.partial.h5``: where an unfinished capture lives."""
    return out.with_name(f"{out.stem}.partial.h5")


class CacheWriter:
    """Writes one cache batch by batch into ``OUT.partial.h5``; ``finish()`` renames it onto ``OUT``."""

    def __init__(self, out: Path, file: h5py.File) -> None:
        self.out = out
        self.path = Path(file.filename)
        self._file = file

    @property
    def n_done(self) -> int:
        return int(self._file.attrs["n_done"])

    @property
    def n_prompts(self) -> int:
        return int(self._file["prompts/ids"].shape[0])

    def write_batch(
        self,
        reductions: dict[str, np.ndarray],
        n_tokens: np.ndarray,
        stats: RunningStats,
        token_acts: np.ndarray | None = None,
        token_ids: np.ndarray | None = None,
    ) -> None:
        """Append the next batch: reductions ``(B, n_layers, d_mlp)``, its tokens' moments, per-token rows."""
        f, start = self._file, self.n_done
        stop = start + len(n_tokens)
        for name, values in reductions.items():
            f[f"acts/{name}"][start:stop] = values
        f["prompts/n_tokens"][start:stop] = n_tokens
        if "tokens" in f:
            offsets = f["tokens/offsets"]
            first = int(offsets[start])
            rows = first + np.concatenate([[0], np.cumsum(n_tokens)])
            f["tokens/acts"].resize(rows[-1], axis=0)
            f["tokens/ids"].resize(rows[-1], axis=0)
            f["tokens/acts"][first:] = token_acts
            f["tokens/ids"][first:] = token_ids
            offsets[start : stop + 1] = rows
        running = RunningStats.from_moments(f["running/count"][()], f["running/mean"][()], f["running/m2"][()])
        running.merge(stats)
        f["running/count"][()] = running.count
        f["running/mean"][...] = running.mean
        f["running/m2"][...] = running.m2
        # n_done moves last: a kill before this line leaves the batch to be redone, not half-counted.
        f.attrs["n_done"] = stop
        f.flush()

    def finish(self) -> Path:
        """Mark complete and rename onto ``OUT`` (replacing it only if the caller allowed that)."""
        if self.n_done != self.n_prompts:
            raise RuntimeError(f"finish() after {self.n_done} of {self.n_prompts} prompts")
        self._file.attrs["complete"] = True
        self._file.close()
        os.replace(self.path, self.out)
        return self.out

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()


def _create(path: Path, layout: CacheLayout, attrs: dict[str, Any], ids: list[str], texts: list[str]) -> h5py.File:
    f = h5py.File(path, "w")
    shape = (layout.n_prompts, layout.n_layers, layout.d_mlp)
    chunks = (min(layout.chunk_rows, layout.n_prompts), 1, layout.d_mlp)
    for name in layout.reductions:
        # NaN fill: rows not yet written read as NaN, never as plausible zeros.
        f.create_dataset(f"acts/{name}", shape, np.float32, chunks=chunks, compression=layout.compression,
                         fillvalue=np.nan)
    f.create_dataset("prompts/ids", data=ids, dtype=_STR, compression="gzip")
    f.create_dataset("prompts/texts", data=texts, dtype=_STR, compression="gzip")
    f.create_dataset("prompts/n_tokens", (layout.n_prompts,), np.int32)
    f.create_dataset("running/count", data=np.int64(0))
    f.create_dataset("running/mean", data=np.zeros(shape[1:], np.float64))
    f.create_dataset("running/m2", data=np.zeros(shape[1:], np.float64))
    if layout.store_tokens:
        f.create_dataset("tokens/acts", (0, *shape[1:]), np.float16, maxshape=(None, *shape[1:]),
                         chunks=(64, 1, layout.d_mlp), compression=layout.compression)
        f.create_dataset("tokens/ids", (0,), np.int32, maxshape=(None,), chunks=(4096,), compression="gzip")
        f.create_dataset("tokens/offsets", (layout.n_prompts + 1,), np.int64)
    for key, value in attrs.items():
        f.attrs[key] = value
    f.attrs["schema"] = SCHEMA
    f.attrs["complete"] = False
    f.attrs["n_done"] = 0
    f.flush()
    return f


def _resumable(path: Path, attrs: dict[str, Any]) -> tuple[h5py.File | None, list[str]]:
    """Open a partial file for appending; (None, []) if it is unusable, (None, diffs) if foreign."""
    try:
        f = h5py.File(path, "r+")
    except OSError as error:
        log.warning("discarding unreadable partial cache %s (%s)", path, error)
        return None, []
    differing = [key for key in IDENTITY_ATTRS if str(f.attrs.get(key)) != str(attrs[key])]
    if f.attrs.get("schema") != SCHEMA or differing:
        f.close()
        return None, differing or ["schema"]
    n_done = int(f.attrs["n_done"])
    if int(f["running/count"][()]) != int(f["prompts/n_tokens"][:n_done].sum()):
        log.warning("discarding partial cache %s: it was interrupted mid-batch", path)
        f.close()
        return None, []
    return f, []


def open_writer(
    out: Path,
    layout: CacheLayout,
    attrs: dict[str, Any],
    ids: list[str],
    texts: list[str],
    *,
    overwrite: bool = False,
) -> CacheWriter:
    """A writer for ``out``: resumes a matching ``OUT.partial.h5`` or starts a new one."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(out)
    if partial.exists():
        f, differing = _resumable(partial, attrs)
        if f is not None:
            log.info("resuming %s from prompt %d of %d", partial, int(f.attrs["n_done"]), layout.n_prompts)
            return CacheWriter(out, f)
        if differing and not overwrite:
            raise ValueError(
                f"{partial} is an unfinished capture with a different {', '.join(differing)}; rerun with the "
                "same model, prompts and options to resume it, or pass overwrite=True (--overwrite) to discard it"
            )
        partial.unlink()
    return CacheWriter(out, _create(partial, layout, attrs, ids, texts))


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class ActivationCache:
    """Read access to a finished cache file (see ``docs/hdf5_schema.md``). Use as a context manager."""

    def __init__(self, path: str | Path, file: h5py.File) -> None:
        self.path = Path(path)
        self._file = file
        self.attrs: dict[str, Any] = {key: _decode(value) for key, value in file.attrs.items()}
        self.reductions: tuple[str, ...] = tuple(json.loads(self.attrs["reductions"]))
        self.layers: list[int] = [int(layer) for layer in np.atleast_1d(file.attrs["layers"])]
        self.d_mlp: int = int(self.attrs["d_mlp"])
        self.prompt_ids: list[str] = [s.decode() for s in file["prompts/ids"][()]]
        self.texts: list[str] = [s.decode() for s in file["prompts/texts"][()]]
        self.n_tokens: np.ndarray = file["prompts/n_tokens"][()]

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def reduction(self, name: str) -> Float[np.ndarray, "n_prompts n_layers d_mlp"]:
        if name not in self.reductions:
            raise ValueError(f"{self.path} holds reductions {list(self.reductions)}, not {name!r}")
        return self._file[f"acts/{name}"][()]

    @property
    def running_count(self) -> int:
        return int(self._file["running/count"][()])

    def running_mean(self) -> Float[np.ndarray, "n_layers d_mlp"]:
        return self._file["running/mean"][()]

    def running_var(self) -> Float[np.ndarray, "n_layers d_mlp"]:
        return RunningStats.from_moments(self.running_count, self.running_mean(), self._file["running/m2"][()]).var

    @property
    def has_tokens(self) -> bool:
        return "tokens" in self._file

    def token_acts(self, index: int) -> Float[np.ndarray, "n_tok n_layers d_mlp"]:
        """Every token's activations for prompt ``index`` (float16); needs ``store_tokens``."""
        if not self.has_tokens:
            raise ValueError(f"{self.path} has no per-token activations; capture with --store-tokens")
        start, stop = self._file["tokens/offsets"][index : index + 2]
        return self._file["tokens/acts"][start:stop]

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> ActivationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ActivationCache({str(self.path)!r}, prompts={len(self)}, layers={len(self.layers)}, "
                f"d_mlp={self.d_mlp}, reductions={list(self.reductions)})")


_REQUIRED = ("prompts/ids", "prompts/texts", "prompts/n_tokens", "running/count", "running/mean", "running/m2")


def open_cache(path: str | Path) -> ActivationCache:
    """Open a finished activation cache; any other file raises a ``ValueError`` that says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"activation cache {path} does not exist; write it with `interp cache`")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file; expected an activation cache written by `interp cache`")
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        reason = str(error).split(";")[0].split("(")[0].strip()
        raise ValueError(f"{path} is damaged and cannot be opened ({reason}); it may be truncated: "
                         "write it again with `interp cache --overwrite`") from None
    try:
        schema = _decode(f.attrs.get("schema"))
        if schema != SCHEMA:
            raise ValueError(f"{path} is an HDF5 file but not a neurodiff activation cache "
                             f"(schema attr {schema!r}, expected {SCHEMA!r})")
        missing = [name for name in _REQUIRED if name not in f]
        missing += [key for key in ("reductions", "layers", "d_mlp", "n_done") if key not in f.attrs]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}; it is damaged: write it again with --overwrite")
        if not f.attrs.get("complete", False):
            raise ValueError(f"{path} is an unfinished capture ({int(f.attrs['n_done'])} of "
                             f"{f['prompts/ids'].shape[0]} prompts); rerun the same `interp cache` to finish it")
        missing = [f"acts/{name}" for name in json.loads(_decode(f.attrs["reductions"])) if f"acts/{name}" not in f]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}; it is damaged: write it again with --overwrite")
        return ActivationCache(path, f)
    except Exception:
        f.close()
        raise
