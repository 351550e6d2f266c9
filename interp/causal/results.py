"""Writing experiment results (atomic JSON + JSONL) and summarising random controls."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from activations.atomic_io import refuse_existing, write_text_atomic

GENERATIONS_FILE = "generations.jsonl"


@dataclass(frozen=True)
class Interval:
    """Mean of a metric over random sets with a 95% t-interval for that mean."""

    mean: float
    low: float
    high: float
    n: int
    values: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "values": list(self.values)}


def interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """``mean +- t * sd / sqrt(n)``; with one value the interval is that value (no spread known)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("an interval needs at least one value")
    mean = float(array.mean())
    if array.size == 1:
        return Interval(mean, mean, mean, 1, (mean,))
    half = float(stats.t.ppf(0.5 + confidence / 2, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size))
    return Interval(mean, mean - half, mean + half, int(array.size), tuple(float(v) for v in array))


def summarise(runs: Sequence[Mapping[str, float]]) -> dict[str, Interval]:
    """Per metric, the interval over runs (each a metric-name -> value mapping)."""
    if not runs:
        return {}
    return {name: interval([run[name] for run in runs]) for name in runs[0]}


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


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]], *, overwrite: bool = False) -> Path:
    """One JSON object per line, atomically."""
    lines = [json.dumps(record, default=_json_default, ensure_ascii=False) for record in records]
    return _write_atomic(Path(path), "\n".join(lines) + ("\n" if lines else ""), overwrite)


def check_writable(paths: Iterable[str | Path], overwrite: bool) -> None:
    """Fail before a long run, not after it, if an output exists and may not be replaced."""
    refuse_existing(list(paths), overwrite)


def save_with_generations(out_dir: str | Path, result_file: str, payload: Any, generations: Iterable[Mapping[str, Any]],
                          *, overwrite: bool = False) -> Path:
    """An experiment's JSON result plus its generated texts (``GENERATIONS_FILE``) in ``out_dir``;
    both outputs are checked before either is written."""
    out = Path(out_dir)
    check_writable([out / result_file, out / GENERATIONS_FILE], overwrite)
    write_jsonl(out / GENERATIONS_FILE, generations, overwrite=overwrite)
    return write_json(out / result_file, payload, overwrite=overwrite)


def text_records(condition: str, k: int | None, set_index: int | None, ids: Sequence[str], texts: Sequence[str]) -> list[dict]:
    """Generated replies as JSONL records that say which condition produced them."""
    return [{"condition": condition, "k": k, "set": set_index, "id": i, "text": t} for i, t in zip(ids, texts)]
