"""Atomic writes and the one overwrite policy, for every package.

A reader never sees a half-written file or folder under its final name: each is written beside the
target (a temporary name on the same filesystem) and renamed into place. An existing output is never
replaced unless the caller passes ``overwrite=True`` (``--overwrite``), and the check runs before
any work, so a long computation cannot end in a refusal.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def refuse_existing(paths: str | os.PathLike | Iterable[str | os.PathLike], overwrite: bool, *,
                    folder: bool = False) -> None:
    """Raise, before any work, when an output could not be written at the end: ``FileExistsError``
    naming every existing path unless ``overwrite``, or an existing folder where a file goes
    (``folder=False``: replacing it would fail only after the work); ``ValueError`` when the folder
    the output goes into cannot be written (``check_writable_folder``)."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not folder:
        folders = [str(p) for p in paths if p.is_dir()]
        if folders:
            raise FileExistsError(f"{', '.join(folders)} {'is a folder' if len(folders) == 1 else 'are folders'}, "
                                  "but the output is a file; pass a file path (e.g. inside that folder), or remove "
                                  "the folder")
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                              "pass overwrite=True (--overwrite) to replace")
    for parent in dict.fromkeys(p.parent for p in paths):
        check_writable_folder(parent)


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``folder`` when files cannot be created in it (read-only, immutable,
    no permission, or a path component that is a file). A folder that does not exist yet is judged by
    its nearest existing ancestor, where it would be created. The probe creates and removes a
    temporary file: permission bits alone do not tell (root ignores them; read-only mounts and
    immutable folders refuse even root)."""
    folder = Path(folder)
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"cannot write into {folder}: {existing} is a file, not a folder; choose another output path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"cannot write into {folder}: creating a file in {existing} fails "
                         f"({error.strerror or error}); choose another output folder, or make that one writable") from None


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would make shared results private
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())  # a full disk or I/O error surfaces here, before the rename
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, payload: Any, default: Any = None) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False, default=default) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSONL file written by ``write_jsonl_atomic`` (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict[str, Any]], default: Any = None) -> None:
    write_text_atomic(path, "".join(json.dumps(record, ensure_ascii=False, default=default) + "\n" for record in records))


def temporary_dir_beside(final: str | os.PathLike) -> Path:
    """An empty folder next to ``final`` (same filesystem, so a rename can publish it)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{final.name}-", suffix=".tmp", dir=final.parent))
    build.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would survive the rename
    return build


def publish_dir(build: str | os.PathLike, final: str | os.PathLike, overwrite: bool) -> None:
    """Move a finished ``build`` folder to ``final``; an old ``final`` is removed only after."""
    build, final = Path(build), Path(final)
    refuse_existing(final, overwrite, folder=True)
    retired = None
    if final.exists():
        retired = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, retired)
    os.replace(build, final)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
