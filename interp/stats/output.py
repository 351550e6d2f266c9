"""Writing results: a CSV table plus a JSON summary beside it, atomically, never clobbering."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from activations.atomic_io import refuse_existing as _refuse, write_text_atomic


def jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and inf become null (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_path(out_csv: str | os.PathLike) -> Path:
    """``neurons.csv`` -> ``neurons.json``."""
    return Path(out_csv).with_suffix(".json")


def refuse_existing(out_csv: str | os.PathLike, overwrite: bool) -> None:
    """Raise unless the table and its summary are both free to write (or ``overwrite``)."""
    csv_path = Path(out_csv)
    if csv_path.suffix == ".json":
        raise ValueError(f"{csv_path} would be overwritten by its own summary; name the table *.csv")
    _refuse([csv_path, summary_path(csv_path)], overwrite)


def save_table_and_summary(
    table: pd.DataFrame, summary: dict[str, Any], out_csv: str | os.PathLike, overwrite: bool
) -> tuple[Path, Path]:
    """Write ``table`` to ``out_csv`` and ``summary`` to ``out_csv`` with a ``.json`` suffix."""
    refuse_existing(out_csv, overwrite)
    csv_path, json_path = Path(out_csv), summary_path(out_csv)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(summary), indent=2) + "\n"  # serialise first: a failure writes nothing
    write_text_atomic(csv_path, table.to_csv(index=False, float_format="%.7g"))
    write_text_atomic(json_path, text)
    return csv_path, json_path
