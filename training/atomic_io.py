"""Atomic writes, for every package: a reader never sees a half-written file or folder under its
final name (temporary file beside the target, then a rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise unless ``path`` is free or the caller asked to overwrite it."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: Path, records: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def temporary_dir_beside(final: Path) -> Path:
    """An empty folder next to ``final`` (same filesystem, so a rename can publish it)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}-", suffix=".tmp", dir=final.parent))


def publish_dir(build: Path, final: Path, overwrite: bool) -> None:
    """Move a finished ``build`` folder to ``final``; an old ``final`` is removed only after."""
    refuse_existing(final, overwrite)
    retired = None
    if final.exists():
        retired = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, retired)
    os.replace(build, final)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
