"""The activation cache on disk: one HDF5 file per (model, prompt set), schema ``neurodiff.activations/2``.

Writing (``CacheWriter``), so that memory is bounded by one batch and a killed run loses at most one:
1. Everything goes to ``OUT.partial.h5`` beside the target. Its datasets are created at full size up
   front (reductions are ``[n_prompts, n_layers, d_mlp]``; per-token rows grow), prompt ids and texts
   are written at once, and the attrs record what is being captured.
2. Each finished batch is written into its rows (reductions, per-role token counts, token ids and
   roles), merged into the running token statistics (``activations.running.TokenStats``, kept in the
   file, not in RAM), then ``n_done`` is advanced and the file flushed.
3. A rerun finds the partial file; if its identity (capture config, prompt-set hash, weights
   fingerprint) matches, it continues from ``n_done``; if not, it stops with an error that says which
   of them differ. A partial file that cannot be read, or whose token count disagrees with its rows
   (killed mid-batch), is discarded and the capture starts again.
4. When the last batch is in, the file is flushed and read back: every reduction must be finite
   wherever its scope has tokens (NaN only where a prompt has none, e.g. no marks), and the token
   counts must agree with the statistics. Only then is ``complete`` set and the file renamed onto
   ``OUT`` with ``os.replace`` (atomic): a file named ``OUT`` is always a verified, finished cache.
   Activation datasets carry fletcher32 checksums, so a corrupted chunk fails to read instead of
   returning wrong numbers.

Only one process writes a given ``OUT`` at a time: the writer holds an exclusive ``flock`` on
``.OUT.lock`` from before it looks at the partial file until it closes, and a second writer fails at
once with an error naming the holder's pid (it never deletes or renames the other's work). A failed
write (full disk, I/O error, file-size limit) raises one ``OSError`` that names the file and the
cause; the file has no chunk cache, so the failure surfaces in the write itself rather than later in
a destructor. A rerun resumes after the last complete batch, or, when the failure left the partial
file unreadable (HDF5 could not flush its metadata), discards it and starts again.

Reading is ``activations.reader.open_cache(path)``: it checks that the file is HDF5, carries this schema and
is complete, and turns anything else into one ``ValueError`` that names the file and the problem.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from activations.atomic_io import refuse_existing
from activations.config import REDUCTIONS
from activations.roles import TokenRole
from activations.running import N_ABS_BINS, RunningStats, TokenStats
from activations.writer_lock import WriterLock

log = logging.getLogger(__name__)

SCHEMA = "neurodiff.activations/2"
IDENTITY_ATTRS = ("capture_config", "prompt_set_hash", "weights_hash")
"""Attrs that must match for a rerun to continue a partial file."""
_STR = h5py.string_dtype("utf-8")
_MEMORY_FILES = itertools.count()


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
    """Whether ``/tokens/acts`` holds every token's activations (float16)."""
    chunk_rows: int
    """Prompts per HDF5 chunk; equal to the batch size so each batch fills whole chunks."""
    compression: str = "lzf"
    """HDF5 filter for activation datasets: ``lzf`` (fast, h5py built-in) or ``gzip``."""
    histogram: bool = True
    """Whether ``/running/abs_hist`` keeps a histogram of |a| over content tokens."""
    sparse: bool = False
    """Whether rows are mixture-of-experts sites that see only their routed tokens: then
    ``/prompts/routed_counts`` holds each row's tokens per prompt and role, and the running counts
    are per row (``activations.reduce``)."""


def partial_path(out: Path) -> Path:
    """``acts.h5`` -> ``acts.partial.h5``: where an unfinished capture lives."""
    return out.with_name(f"{out.stem}.partial.h5")


def read_moments(f: h5py.File, scope: str) -> RunningStats:
    group = f[f"running/{scope}"]
    return RunningStats.from_moments(group["count"][()], group["mean"][()], group["m2"][()])


def read_token_stats(f: h5py.File) -> TokenStats:
    """The token statistics stored in an open cache file."""
    running = f["running"]
    per_row = running["all/count"].ndim > 0
    stats = TokenStats(running["all/mean"].shape, histogram="abs_hist" in running, per_row=per_row)
    stats.all, stats.content = read_moments(f, "all"), read_moments(f, "content")
    stats.absmax_all = running["absmax_all"][()]
    stats.absmax_content = running["absmax_content"][()]
    stats.pos0_abs_sum = running["pos0_abs_sum"][()]
    pos0_count = running["pos0_count"][()]
    stats.pos0_count = pos0_count.astype(np.int64).reshape(-1, 1) if per_row else int(pos0_count)
    if stats.abs_hist is not None:
        stats.abs_hist = running["abs_hist"][()].astype(np.int64)
    return stats


def _write_token_stats(f: h5py.File, stats: TokenStats) -> None:
    for scope, moments in (("all", stats.all), ("content", stats.content)):
        group = f[f"running/{scope}"]
        group["count"][...] = np.reshape(moments.count, group["count"].shape)
        group["mean"][...] = moments.mean
        group["m2"][...] = moments.m2
    f["running/absmax_all"][...] = stats.absmax_all
    f["running/absmax_content"][...] = stats.absmax_content
    f["running/pos0_abs_sum"][...] = stats.pos0_abs_sum
    f["running/pos0_count"][...] = np.reshape(stats.pos0_count, f["running/pos0_count"].shape)
    if stats.abs_hist is not None and "abs_hist" in f["running"]:
        f["running/abs_hist"][...] = stats.abs_hist.astype(np.int32)


def decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def scope_counts(role_counts: np.ndarray, scope: str) -> np.ndarray:
    """Tokens per prompt in ``scope`` from ``(n_prompts, 4)`` per-role counts (or ``(n_prompts, n_rows, 4)``
    routed counts, giving ``(n_prompts, n_rows)``)."""
    columns = {"all": list(TokenRole), "content": [TokenRole.CONTENT, TokenRole.MARKED, TokenRole.CONTROL],
               "marked": [TokenRole.MARKED], "control": [TokenRole.CONTROL], "context": [TokenRole.CONTENT]}[scope]
    return role_counts[..., [int(role) for role in columns]].sum(-1)


def _counted_tokens(f: h5py.File, n_done: int, scope: str) -> np.ndarray:
    """Tokens of ``scope`` in the first ``n_done`` prompts, as the running counts should hold them:
    one number, or one per row (routed tokens) in a file with ``/prompts/routed_counts``."""
    if "prompts/routed_counts" in f:
        return scope_counts(f["prompts/routed_counts"][:n_done], scope).sum(0)
    return np.int64(scope_counts(f["prompts/role_counts"][:n_done], scope).sum())


def verify_cache(f: h5py.File, label: str,
                 advice: str = "the capture is damaged: capture it again with --overwrite") -> None:
    """Raise ``ValueError`` unless every written row is finite where its scope has tokens and the
    token statistics agree with the per-prompt token counts (step 4 of the module docstring)."""
    n_done = int(f.attrs["n_done"])
    role_counts = f["prompts/role_counts"][:n_done]
    routed = f["prompts/routed_counts"][:n_done] if "prompts/routed_counts" in f else None
    for name in json.loads(decode_attr(f.attrs["reductions"])):
        scope = REDUCTIONS[name][0]
        # (n_prompts, n_rows): a routed row is defined where its expert saw a token of the scope
        defined = scope_counts(role_counts, scope)[:, None] > 0 if routed is None else scope_counts(routed, scope) > 0
        values = f[f"acts/{name}"][:n_done]
        finite = np.isfinite(values).all(axis=2)
        broken = (defined & ~finite).any(1)
        if routed is not None:
            # Whether the last token reached an expert is not stored, so `last` is checked only for
            # wholeness: each row all finite, or all NaN (undefined), never a mix.
            defined = defined & (name != "last")
            broken = (defined & ~finite).any(1) | ~(finite | np.isnan(values).all(axis=2)).all(1)
        bad = np.flatnonzero(broken)
        if len(bad):
            raise ValueError(f"{label}: /acts/{name} has NaN or inf in {len(bad)} written prompt rows (first: row "
                             f"{bad[0]}); {advice}")
    stats = read_token_stats(f)
    expected_all, expected_content = _counted_tokens(f, n_done, "all"), _counted_tokens(f, n_done, "content")
    if (np.ravel(stats.all.count) != np.ravel(expected_all)).any() or (
            np.ravel(stats.content.count) != np.ravel(expected_content)).any():
        raise ValueError(f"{label}: token statistics count {np.ravel(stats.all.count).tolist()} tokens but the "
                         f"prompts hold {np.ravel(expected_all).tolist()}; {advice}")


class CacheWriter:
    """Writes one cache batch by batch into ``OUT.partial.h5`` (or an in-memory file when ``out`` is
    None); ``finish()`` verifies it and renames it onto ``OUT``."""

    def __init__(self, out: Path | None, file: h5py.File, lock: WriterLock | None = None) -> None:
        self.out = out
        self.path = Path(file.filename)
        self._file = file
        self._lock = lock
        self._stats = read_token_stats(file)  # kept in memory; written (not read back) after every batch

    @property
    def file(self) -> h5py.File:
        return self._file

    @property
    def n_done(self) -> int:
        return int(self._file.attrs["n_done"])

    @property
    def n_prompts(self) -> int:
        return int(self._file["prompts/ids"].shape[0])

    def write_batch(
        self,
        reductions: dict[str, np.ndarray],
        role_counts: np.ndarray,
        stats: TokenStats,
        token_ids: np.ndarray,
        token_roles: np.ndarray,
        token_acts: np.ndarray | None = None,
        routed_counts: np.ndarray | None = None,
    ) -> None:
        """Append the next batch: reductions ``(B, n_layers, d_mlp)``, per-role token counts ``(B, 4)``,
        its token statistics and its real tokens' ids and roles (and activations, when stored; and, in
        a file of expert rows, each row's routed tokens per role ``(B, n_layers, 4)``)."""
        if ("prompts/routed_counts" in self._file) != (routed_counts is not None):
            raise ValueError(f"{self.path}: routed_counts are needed exactly when the rows are experts")
        try:
            self._write_batch(reductions, role_counts, stats, token_ids, token_roles, token_acts, routed_counts)
        except OSError as error:  # ENOSPC, EIO, EFBIG: h5py raises them here or at the flush
            try:
                self.close()
            except (OSError, RuntimeError):  # closing flushes too, and fails the same way: the error above says it
                pass
            reason = os.strerror(error.errno) if error.errno else " ".join(str(error).split())  # HDF5's text spans lines
            raise OSError(error.errno, f"writing {self.path} failed: {reason}; free space (or fix the device) "
                          "and rerun: it continues after the last complete batch, or starts again if the failure "
                          "left the partial file unreadable") from None

    def _write_batch(self, reductions, role_counts, stats, token_ids, token_roles, token_acts, routed_counts) -> None:
        f, start = self._file, self.n_done
        stop = start + len(role_counts)
        for name, values in reductions.items():
            f[f"acts/{name}"][start:stop] = values
        f["prompts/role_counts"][start:stop] = role_counts
        if routed_counts is not None:
            f["prompts/routed_counts"][start:stop] = routed_counts
        n_tokens = role_counts.sum(1)
        f["prompts/n_tokens"][start:stop] = n_tokens
        offsets = f["tokens/offsets"]
        first = int(offsets[start])
        rows = first + np.concatenate([[0], np.cumsum(n_tokens)])
        for name, values in (("ids", token_ids), ("roles", token_roles), ("acts", token_acts)):
            if values is None or f"tokens/{name}" not in f:
                continue
            f[f"tokens/{name}"].resize(rows[-1], axis=0)
            f[f"tokens/{name}"][first:] = values
        offsets[start : stop + 1] = rows
        self._stats.merge(stats)
        _write_token_stats(f, self._stats)
        # n_done moves last: a kill before this line leaves the batch to be redone, not half-counted.
        f.attrs["n_done"] = stop
        f.flush()

    def finish(self) -> Path | None:
        """Verify, mark complete and (for a file) rename onto ``OUT``."""
        if self.n_done != self.n_prompts:
            raise RuntimeError(f"finish() after {self.n_done} of {self.n_prompts} prompts")
        self._file.flush()
        try:
            verify_cache(self._file, str(self.out or "in-memory cache"),
                         "the writes did not all reach the disk, so the partial file is removed: rerun to capture again")
        except ValueError:
            # a resume would only find the same damage, so the partial file goes and a rerun starts over
            self.close()
            if self.out is not None:
                self.path.unlink(missing_ok=True)
            raise
        self._file.attrs["complete"] = True
        self._file.flush()
        if self.out is None:
            return None
        self._file.close()
        os.replace(self.path, self.out)
        self.close()
        return self.out

    def close(self) -> None:
        """Close the file (flushing what it can) and release the lock; safe to call twice."""
        try:
            if self._file.id.valid:
                self._file.close()
        finally:
            if self._lock is not None:
                self._lock.release()


def _create(file: h5py.File, layout: CacheLayout, attrs: dict[str, Any], ids: list[str], texts: list[str],
            extras: dict[str, list[str]]) -> h5py.File:
    f = file
    shape = (layout.n_prompts, layout.n_layers, layout.d_mlp)
    chunks = (min(layout.chunk_rows, layout.n_prompts), 1, layout.d_mlp)
    for name in layout.reductions:
        # NaN fill: rows not yet written read as NaN, never as plausible zeros. fletcher32: a flipped
        # bit in a chunk fails the read instead of becoming a wrong activation.
        f.create_dataset(f"acts/{name}", shape, np.float32, chunks=chunks, compression=layout.compression,
                         fletcher32=True, fillvalue=np.nan)
    f.create_dataset("prompts/ids", data=ids, dtype=_STR, compression="gzip")
    f.create_dataset("prompts/texts", data=texts, dtype=_STR, compression="gzip")
    for name, values in extras.items():  # marks / controls (JSON per prompt), contexts
        f.create_dataset(f"prompts/{name}", data=values, dtype=_STR, compression="gzip")
    f.create_dataset("prompts/n_tokens", (layout.n_prompts,), np.int32)
    f.create_dataset("prompts/role_counts", (layout.n_prompts, len(TokenRole)), np.int32)
    stat_shape = shape[1:]
    count = np.zeros(layout.n_layers, np.int64) if layout.sparse else np.int64(0)  # per row: routed tokens
    if layout.sparse:
        f.create_dataset("prompts/routed_counts", (layout.n_prompts, layout.n_layers, len(TokenRole)), np.int32)
    for scope in ("all", "content"):
        f.create_dataset(f"running/{scope}/count", data=count)
        f.create_dataset(f"running/{scope}/mean", data=np.zeros(stat_shape, np.float64))
        f.create_dataset(f"running/{scope}/m2", data=np.zeros(stat_shape, np.float64))
    for name in ("absmax_all", "absmax_content", "pos0_abs_sum"):
        f.create_dataset(f"running/{name}", data=np.zeros(stat_shape, np.float64))
    f.create_dataset("running/pos0_count", data=count)
    if layout.histogram:
        f.create_dataset("running/abs_hist", (*stat_shape, N_ABS_BINS), np.int32,
                         chunks=(1, layout.d_mlp, N_ABS_BINS), compression=layout.compression, fillvalue=0)
    f.create_dataset("tokens/ids", (0,), np.int32, maxshape=(None,), chunks=(4096,), compression="gzip")
    f.create_dataset("tokens/roles", (0,), np.int8, maxshape=(None,), chunks=(4096,), compression="gzip")
    f.create_dataset("tokens/offsets", (layout.n_prompts + 1,), np.int64)
    if layout.store_tokens:
        f.create_dataset("tokens/acts", (0, *stat_shape), np.float16, maxshape=(None, *stat_shape),
                         chunks=(64, 1, layout.d_mlp), compression=layout.compression, fletcher32=True)
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
        f = h5py.File(path, "r+", rdcc_nbytes=0)
    except OSError as error:
        log.warning("discarding unreadable partial cache %s (%s)", path, error)
        return None, []
    differing = [key for key in IDENTITY_ATTRS if str(f.attrs.get(key)) != str(attrs[key])]
    if f.attrs.get("schema") != SCHEMA or differing:
        f.close()
        return None, differing or ["schema"]
    n_done = int(f.attrs["n_done"])
    if (np.ravel(f["running/all/count"][()]) != np.ravel(_counted_tokens(f, n_done, "all"))).any():
        log.warning("discarding partial cache %s: it was interrupted mid-batch", path)
        f.close()
        return None, []
    return f, []


def open_writer(
    out: Path | None,
    layout: CacheLayout,
    attrs: dict[str, Any],
    ids: list[str],
    texts: list[str],
    *,
    extras: dict[str, list[str]] | None = None,
    overwrite: bool = False,
) -> CacheWriter:
    """A writer for ``out``: resumes a matching ``OUT.partial.h5`` or starts a new one; ``out`` None
    writes an in-memory file (nothing touches the disk)."""
    extras = extras or {}
    if out is None:
        # HDF5 refuses a second open file of the same name even in memory, and id() of a freed layout
        # comes back while the first in-memory cache is still alive: a counter never repeats.
        name = f"neurodiff-memory-{os.getpid()}-{next(_MEMORY_FILES)}.h5"
        return CacheWriter(None, _create(h5py.File(name, "w", driver="core", backing_store=False),
                                         layout, attrs, ids, texts, extras))
    out = Path(out)
    lock = WriterLock(out)  # before anything reads, deletes or creates the partial file
    try:
        refuse_existing(out, overwrite)
        partial = partial_path(out)
        if partial.exists():
            f, differing = _resumable(partial, attrs)
            if f is not None:
                log.info("resuming %s from prompt %d of %d", partial, int(f.attrs["n_done"]), layout.n_prompts)
                return CacheWriter(out, f, lock)
            if differing and not overwrite:
                raise ValueError(
                    f"{partial} is an unfinished capture with a different {', '.join(differing)}; rerun with the "
                    "same model, prompts and options to resume it, or pass overwrite=True (--overwrite) to discard it"
                )
            partial.unlink()
        # No chunk cache: a chunk is written inside the assignment that fills it, so a full disk raises
        # there. With h5py's default 1 MiB cache the write happens when the dataset object is freed,
        # where the error can only be printed ("Exception ignored") and HDF5 later crashes.
        f = h5py.File(partial, "w", rdcc_nbytes=0)
        return CacheWriter(out, _create(f, layout, attrs, ids, texts, extras), lock)
    except BaseException:
        lock.release()
        raise
