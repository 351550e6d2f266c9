"""Writing experiment results: atomic JSON and text files that refuse to replace without ``overwrite``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from activations.atomic_io import refuse_existing, write_text_atomic


def _json_default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _write_atomic(path: Path, text: str, overwrite: bool) -> Path:
    refuse_existing(path, overwrite)
    write_text_atomic(path, text)
    return path


def write_text(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` atomically."""
    return _write_atomic(Path(path), text, overwrite)


def write_json(path: str | Path, payload: Any, *, overwrite: bool = False) -> Path:
    """Write ``payload`` (dicts, lists, dataclasses with ``to_dict``) as indented JSON, atomically."""
    return _write_atomic(Path(path), json.dumps(payload, indent=2, default=_json_default, ensure_ascii=False) + "\n", overwrite)
