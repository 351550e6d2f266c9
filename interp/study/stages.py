"""Resumable, fingerprinted pipeline stages.

1. Each stage declares its name, the stages it depends on, and the config values it reads.
2. Its fingerprint is a hash of those values and of its dependencies' fingerprints, so changing a
   setting re-runs exactly the stages downstream of it.
3. A stage that finishes writes ``DIR/stages/NAME.json`` (atomically) with its fingerprint, its
   result summary, its outputs and its wall time. A rerun whose fingerprint matches a record, and
   whose recorded outputs all exist, is skipped.
4. A stage killed midway leaves no record, so a rerun redoes it: a stage therefore overwrites its
   own outputs (they are untrusted without a record), while long stages (training, caching) resume
   from their own checkpoints inside the stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from interp.causal.results import write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One step of a study."""

    name: str
    run: Callable[["StageContext"], dict[str, Any]]
    """Does the work; returns a JSON-able summary that must include ``outputs`` (paths under DIR)."""
    depends: tuple[str, ...] = ()
    """Names of stages whose outputs this one reads."""
    reads: tuple[str, ...] = ()
    """Names of study-config fields whose values change this stage's result."""


@dataclass
class StageContext:
    """What a running stage may see: the study directory, the config and earlier results."""

    out: Path
    config: Any
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


def fingerprint(stage: Stage, config: Any, upstream: Mapping[str, str]) -> str:
    payload = {
        "stage": stage.name,
        "reads": {name: getattr(config, name) for name in stage.reads},
        "upstream": {name: upstream[name] for name in stage.depends},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _record_path(out: Path, name: str) -> Path:
    return out / "stages" / f"{name}.json"


def _load_record(out: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(_record_path(out, name).read_text())
    except (OSError, ValueError):
        return None


def _outputs_exist(out: Path, record: Mapping[str, Any]) -> bool:
    return all((out / rel).exists() for rel in record.get("result", {}).get("outputs", []))


def run_stages(
    stages: Sequence[Stage],
    out: Path,
    config: Any,
    force: Sequence[str] = (),
    until: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in order into ``out``, skipping finished ones; returns every stage's record."""
    names = [stage.name for stage in stages]
    unknown = sorted(set(force) - set(names))
    if unknown:
        raise ValueError(f"--force {', '.join(unknown)}: no such stage; stages are {', '.join(names)}")
    prints: dict[str, str] = {}
    records: dict[str, dict[str, Any]] = {}
    context = StageContext(out, config)
    for stage in stages:
        prints[stage.name] = fingerprint(stage, config, prints)
        record = _load_record(out, stage.name)
        fresh = record is not None and record.get("fingerprint") == prints[stage.name] and _outputs_exist(out, record)
        if fresh and stage.name not in force:
            log.info("stage %-10s skipped (finished %s)", stage.name, record["finished"])
            record = {**record, "skipped": True}  # returned only: the file keeps the run that made it
        else:
            log.info("stage %-10s running", stage.name)
            started = time.perf_counter()
            result = stage.run(context)
            record = {
                "stage": stage.name,
                "fingerprint": prints[stage.name],
                "seconds": round(time.perf_counter() - started, 2),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "result": result,
            }
            write_json(_record_path(out, stage.name), record, overwrite=True)
            log.info("stage %-10s done in %.1f s", stage.name, record["seconds"])
        records[stage.name] = record
        context.results[stage.name] = record["result"]
        if stage.name == until:
            break
    return records


def load_records(out: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The finished stages' records (for rebuilding a report without recomputing)."""
    records = {name: _load_record(out, name) for name in names}
    return {name: record for name, record in records.items() if record is not None}
