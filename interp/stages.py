"""Resumable stages whose records chain on the *content* of what they read.

1. Each stage declares its name, the stages whose outputs it reads, the config values it reads, the
   input files it reads outside the study (e.g. the training data), and a version that is raised
   whenever what the stage computes changes.
2. A finished stage writes ``DIR/stages/NAME.json`` (atomically): its fingerprint, the sha256 of
   every output it wrote, its summary and its wall time.
3. A stage's fingerprint hashes its name and version, the config values it reads, the content
   hashes of its external inputs, and the *recorded output hashes of the stages it depends on*.
4. A stage is fresh, and skipped, only if its record's fingerprint equals the one computed now and
   every recorded output still has the recorded hash. Anything else reruns it: a changed setting,
   an edited, deleted or truncated output (its hash no longer matches), or an upstream stage that
   reran and produced other bytes (the fingerprint changes). A result computed from inputs that
   have changed since can therefore never be reported as finished.
5. A stage killed midway leaves no record and reruns; it overwrites its own outputs, while long
   stages (training, caching) resume from their own checkpoints inside the stage.
6. The stages named ``published`` (the report) are what a person reads. Before any other stage
   reruns, their record and outputs are removed, so a run that fails halfway cannot leave a report
   of the old inputs beside the new ones; the next run that gets through writes it again.
Hashes of big files are computed once per run (and remembered by size and modification time).
"""

from __future__ import annotations

import dataclasses

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from activations.atomic_io import write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One step of a study."""

    name: str
    run: Callable[["StageContext"], dict[str, Any]]
    """Does the work; returns a JSON-able summary that must include ``outputs`` (paths under DIR)."""
    depends: tuple[str, ...] = ()
    """Stages whose outputs this one reads."""
    reads: tuple[str, ...] = ()
    """Study-config fields whose values change this stage's result."""
    inputs: Callable[[Any], Sequence[Path]] = lambda config: ()
    """Files outside the study directory that the stage reads (hashed into its fingerprint)."""
    version: int = 1
    """Raised when what the stage computes changes, so old records do not count as finished."""


@dataclass
class StageContext:
    """What a running stage may see: the study directory, the config and earlier results."""

    out: Path
    config: Any
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


_HASHES: dict[tuple[str, int, int], str] = {}


def _file_hash(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()[:16]
    return _HASHES[key]


def content_hash(path: Path) -> str | None:
    """sha256 of a file, or of a folder's files (relative names and contents, hidden files skipped);
    None if the path does not exist."""
    if path.is_file():
        return _file_hash(path)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".")
                                                                              for part in p.relative_to(path).parts)):
        digest.update(f"{child.relative_to(path)}\0{_file_hash(child)}\n".encode())
    return digest.hexdigest()[:16]


def _plain(value: Any) -> Any:
    """A setting as JSON sees it (a nested stage config as its fields)."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def fingerprint(stage: Stage, config: Any, upstream: Mapping[str, Mapping[str, str]]) -> str:
    payload = {
        "stage": stage.name,
        "version": stage.version,
        "reads": {name: _plain(getattr(config, name)) for name in stage.reads},
        "inputs": {str(p): content_hash(Path(p)) for p in stage.inputs(config)},
        "upstream": {name: dict(upstream.get(name, {})) for name in stage.depends},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _record_path(out: Path, name: str) -> Path:
    return out / "stages" / f"{name}.json"


def load_record(out: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(_record_path(out, name).read_text())
    except (OSError, ValueError):
        return None


def _outputs_intact(out: Path, record: Mapping[str, Any]) -> bool:
    hashes = record.get("outputs")
    if not isinstance(hashes, dict):
        return False
    return all(content_hash(out / rel) == digest for rel, digest in hashes.items())


def _staleness(out: Path, record: Mapping[str, Any] | None, print_: str) -> str | None:
    """Why a stage must rerun, or None if its record is fresh (module docstring, point 4)."""
    if record is None:
        return "no record"
    if record.get("fingerprint") != print_:
        return "inputs or settings changed"
    return None if _outputs_intact(out, record) else "outputs changed"


def stale_stages(stages: Sequence[Stage], out: Path, config: Any) -> dict[str, str]:
    """Stage name -> why it would rerun, for every stage that is not fresh; runs nothing."""
    hashes: dict[str, dict[str, str]] = {}
    stale = {}
    for stage in stages:
        record = load_record(out, stage.name)
        reason = _staleness(out, record, fingerprint(stage, config, hashes))
        if reason is not None:
            stale[stage.name] = reason
        hashes[stage.name] = (record or {}).get("outputs", {}) if reason is None else {"stale": stage.name}
    return stale


def run_stages(
    stages: Sequence[Stage],
    out: Path,
    config: Any,
    force: Sequence[str] = (),
    until: str | None = None,
    published: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in order into ``out``, skipping fresh ones (module docstring); returns every
    stage's record, with ``skipped`` set on the ones not run now."""
    names = [stage.name for stage in stages]
    unknown = sorted(set(force) - set(names))
    if unknown:
        raise ValueError(f"--force {', '.join(unknown)}: no such stage; stages are {', '.join(names)}")
    hashes: dict[str, dict[str, str]] = {}
    records: dict[str, dict[str, Any]] = {}
    context = StageContext(out, config)
    for stage in stages:
        print_ = fingerprint(stage, config, hashes)
        record = load_record(out, stage.name)
        reason = "forced" if stage.name in force else _staleness(out, record, print_)
        if reason is None:
            log.info("stage %-10s fresh (finished %s): skipped", stage.name, record["finished"])
            record = {**record, "skipped": True}  # returned only: the file keeps the run that made it
        else:
            log.info("stage %-10s running (%s)", stage.name, reason)
            if stage.name not in published:
                _withdraw(out, [name for name in published if name != stage.name])
            _record_path(out, stage.name).unlink(missing_ok=True)  # a killed run must not leave the old record
            started = time.perf_counter()
            result = stage.run(context)
            outputs = {rel: content_hash(out / rel) for rel in result.get("outputs", [])}
            missing = [rel for rel, digest in outputs.items() if digest is None]
            if missing:
                raise RuntimeError(f"stage {stage.name} reported outputs it did not write: {missing}")
            record = {
                "stage": stage.name,
                "fingerprint": print_,
                "outputs": outputs,
                "seconds": round(time.perf_counter() - started, 2),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "result": result,
            }
            write_json_atomic(_record_path(out, stage.name), record)
            log.info("stage %-10s done in %.1f s", stage.name, record["seconds"])
        records[stage.name] = record
        hashes[stage.name] = record["outputs"]
        context.results[stage.name] = record["result"]
        if stage.name == until:
            break
    return records


def _withdraw(out: Path, names: Sequence[str]) -> None:
    """Remove the named stages' records and recorded outputs (module docstring, point 6)."""
    for name in names:
        record = load_record(out, name)
        if record is None:
            continue
        _record_path(out, name).unlink(missing_ok=True)
        for rel in record.get("outputs", {}):
            path = out / rel
            if path.is_file():
                path.unlink()
        log.info("stage %-10s withdrawn: its outputs described the old inputs and are written again at the end",
                 name)


def load_records(out: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The finished stages' records (for rebuilding a report without recomputing)."""
    records = {name: load_record(out, name) for name in names}
    return {name: record for name, record in records.items() if record is not None}


def relative(out: Path, path: Path) -> str:
    return os.path.relpath(Path(path).resolve(), out.resolve())
