"""Atomic files and folders: nothing half-written under the final name, the umask's permissions, the
one overwrite policy."""

from __future__ import annotations

import os
import stat

import pytest

from activations.atomic_io import publish_dir, refuse_existing, temporary_dir_beside, write_json_atomic, write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_and_folders_get_the_umasks_permissions(tmp_path, umask_022) -> None:
    write_text_atomic(tmp_path / "a.txt", "hello\n")
    reference = tmp_path / "plain.txt"
    reference.write_text("hello\n")  # what open() gives under the same umask
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == stat.S_IMODE(reference.stat().st_mode) == 0o644
    build = temporary_dir_beside(tmp_path / "out")
    (build / "x.json").write_text("{}")
    publish_dir(build, tmp_path / "out", overwrite=False)
    os.mkdir(tmp_path / "plain")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "r.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"v": object()})  # not JSON: fails before anything is renamed
    assert target.read_text() == '{\n  "v": 1\n}\n' and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_existing_outputs_are_refused_by_name(tmp_path) -> None:
    (tmp_path / "a").write_text("")
    with pytest.raises(FileExistsError, match=r"a already exists; pass overwrite=True \(--overwrite\)"):
        refuse_existing([tmp_path / "a", tmp_path / "b"], overwrite=False)
    refuse_existing(tmp_path / "a", overwrite=True)
    build = temporary_dir_beside(tmp_path / "d")
    (tmp_path / "d").mkdir()
    with pytest.raises(FileExistsError):
        publish_dir(build, tmp_path / "d", overwrite=False)
    publish_dir(build, tmp_path / "d", overwrite=True)
    assert (tmp_path / "d").is_dir() and not build.exists()


def test_outputs_that_could_not_be_written_fail_before_any_work(tmp_path) -> None:
    (tmp_path / "out.json").mkdir()
    with pytest.raises(FileExistsError, match="is a folder, but the output is a file"):
        refuse_existing(tmp_path / "out.json", overwrite=True)
    refuse_existing(tmp_path / "out.json", overwrite=True, folder=True)  # a folder output may replace a folder
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file is a file, not a folder"):
        refuse_existing(tmp_path / "file" / "deeper" / "out.json", overwrite=False)
    refuse_existing(tmp_path / "new" / "deeper" / "out.json", overwrite=False)  # created later, under a writable one
