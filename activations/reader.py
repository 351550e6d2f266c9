"""Reading a finished activation cache (``docs/hdf5_schema.md``): ``open_cache(path)`` and
``ActivationCache``, for files on disk and in-memory captures alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from jaxtyping import Float

from activations.config import REDUCTIONS
from activations.running import TokenStats
from activations.store import SCHEMA, decode_attr, read_moments, read_token_stats, scope_counts


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in dataset[()]]


class ActivationCache:
    """Read access to a finished cache (see ``docs/hdf5_schema.md``), on disk or in memory. Use as a
    context manager (or call ``close``)."""

    def __init__(self, path: str | Path | None, file: h5py.File) -> None:
        self.path = Path(path) if path is not None else None
        self._file = file
        self.attrs: dict[str, Any] = {key: decode_attr(value) for key, value in file.attrs.items()}
        self.reductions: tuple[str, ...] = tuple(json.loads(self.attrs["reductions"]))
        self.layers: list[int] = [int(layer) for layer in np.atleast_1d(file.attrs["layers"])]
        self.d_mlp: int = int(self.attrs["d_mlp"])
        self.prompt_ids: list[str] = _strings(file["prompts/ids"])
        self.texts: list[str] = _strings(file["prompts/texts"])
        self.n_tokens: np.ndarray = file["prompts/n_tokens"][()]
        self.role_counts: np.ndarray = file["prompts/role_counts"][()]
        self.site_names: list[str] | None = json.loads(self.attrs["sites"]) if "sites" in self.attrs else None
        """Each row's site name in a capture of mixture-of-experts sites (several rows per layer); else None."""
        self.experts: list[int] | None = [int(e) for e in np.atleast_1d(self.attrs["experts"])] \
            if "experts" in self.attrs else None
        """Each row's expert (-1: a dense or shared-expert row), with ``site_names``; else None."""

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else f"in-memory cache of {self.attrs.get('prompt_set')}"

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def reduction(self, name: str) -> Float[np.ndarray, "n_prompts n_layers d_mlp"]:
        """``(n_prompts, n_layers, d_mlp)`` float32; NaN in the rows of prompts with no token in its scope."""
        if name not in self.reductions:
            raise ValueError(f"{self.label} holds reductions {list(self.reductions)}, not {name!r}; capture with "
                             f"--reductions {name} (known: {', '.join(REDUCTIONS)})")
        try:
            return self._file[f"acts/{name}"][()]
        except OSError as error:  # fletcher32: a flipped bit fails here instead of becoming a number
            raise ValueError(f"{self.label}: /acts/{name} cannot be read back ({' '.join(str(error).split())}); the "
                             "file is corrupted: capture it again with --overwrite") from None

    def defined(self, name: str) -> np.ndarray:
        """``(n_prompts,)`` bool: prompts with at least one token in the scope of reduction ``name``; in a
        capture of expert sites ``(n_prompts, n_rows)``: at least one such token routed to the row's expert."""
        if "prompts/routed_counts" in self._file:
            return scope_counts(self._file["prompts/routed_counts"][()], REDUCTIONS[name][0]) > 0
        return scope_counts(self.role_counts, REDUCTIONS[name][0]) > 0

    def token_stats(self) -> TokenStats:
        """Per-neuron token statistics (moments, max |a|, position-0 |a|, |a| histogram)."""
        return read_token_stats(self._file)

    @property
    def running_count(self) -> int | np.ndarray:
        """Tokens the running statistics cover: one count, or one per row (routed tokens) for expert sites."""
        count = self._file["running/all/count"][()]
        return int(count) if np.ndim(count) == 0 else count

    def running_mean(self, scope: str = "all") -> Float[np.ndarray, "n_layers d_mlp"]:
        """Mean over all real tokens (``scope="all"``) or over content tokens (``"content"``)."""
        return read_moments(self._file, scope).mean

    def running_var(self, scope: str = "all") -> Float[np.ndarray, "n_layers d_mlp"]:
        return read_moments(self._file, scope).var

    def marks(self) -> list[list[list[int]]] | None:
        """Per prompt, the marked character spans given at capture (None when the set had none)."""
        return [json.loads(s) for s in _strings(self._file["prompts/marks"])] if "prompts/marks" in self._file else None

    def contexts(self) -> list[str] | None:
        return _strings(self._file["prompts/contexts"]) if "prompts/contexts" in self._file else None

    def tokens(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and roles (``activations.roles.TokenRole``) of prompt ``index``."""
        start, stop = self._file["tokens/offsets"][index : index + 2]
        return self._file["tokens/ids"][start:stop], self._file["tokens/roles"][start:stop]

    @property
    def has_tokens(self) -> bool:
        return "tokens/acts" in self._file

    def token_acts(self, index: int) -> Float[np.ndarray, "n_tok n_layers d_mlp"]:
        """Every token's activations for prompt ``index`` (float16); needs ``store_tokens``."""
        if not self.has_tokens:
            raise ValueError(f"{self.label} has no per-token activations; capture with --store-tokens")
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
        return (f"ActivationCache({self.label!r}, prompts={len(self)}, layers={len(self.layers)}, "
                f"d_mlp={self.d_mlp}, reductions={list(self.reductions)})")


_REQUIRED = ("prompts/ids", "prompts/texts", "prompts/n_tokens", "prompts/role_counts", "running/all/count",
             "running/all/mean", "running/all/m2", "running/content/count", "tokens/offsets")


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
        schema = decode_attr(f.attrs.get("schema"))
        if schema == "neurodiff.activations/1":
            raise ValueError(f"{path} was captured by an older neurodiff (schema {schema!r}, without token roles); "
                             "capture it again with `interp cache --overwrite`")
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
        missing = [f"acts/{name}" for name in json.loads(decode_attr(f.attrs["reductions"])) if f"acts/{name}" not in f]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}; it is damaged: write it again with --overwrite")
        return ActivationCache(path, f)
    except Exception:
        f.close()
        raise
