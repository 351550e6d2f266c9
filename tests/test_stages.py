"""Content-chained stage records on toy stages: what reruns after a change, an edit or a kill."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from interp.stages import Stage, content_hash, run_stages


@dataclasses.dataclass(frozen=True)
class Settings:
    word: str = "hello"
    times: int = 2
    suffix: str = "!"


def _make_stages(log: list[str], source: Path, fail: set[str] | None = None, stamp: str = "") -> tuple[Stage, ...]:
    fail = fail if fail is not None else set()

    def first(ctx):
        log.append("first")
        # ``stamp`` stands for what a real stage cannot promise to reproduce (a time in an HDF5 attr,
        # training that is not bit-exact on this machine)
        ctx.path("a.txt").write_text(ctx.config.word * ctx.config.times + source.read_text() + stamp)
        return {"outputs": ["a.txt"]}

    def second(ctx):
        log.append("second")
        if "second" in fail:
            raise KeyboardInterrupt("killed")
        ctx.path("b.txt").write_text(ctx.path("a.txt").read_text().upper() + ctx.config.suffix)
        return {"outputs": ["b.txt"]}

    def third(ctx):
        log.append("third")
        ctx.path("c").mkdir(exist_ok=True)
        (ctx.path("c") / "len.txt").write_text(str(len(ctx.path("b.txt").read_text())))
        return {"outputs": ["c"]}

    return (Stage("first", first, (), ("word", "times"), lambda config: [source]),
            Stage("second", second, ("first",), ("suffix",)),
            Stage("third", third, ("second",)))


@pytest.fixture
def study(tmp_path: Path):
    source = tmp_path / "source.txt"
    source.write_text("data")
    out = tmp_path / "study"
    out.mkdir()
    log: list[str] = []
    run_stages(_make_stages(log, source), out, Settings())
    assert log == ["first", "second", "third"]
    return out, source


def _rerun(out: Path, source: Path, settings: Settings = Settings(), **kwargs) -> list[str]:
    log: list[str] = []
    run_stages(_make_stages(log, source), out, settings, **kwargs)
    return log


def test_a_finished_study_reruns_nothing(study):
    out, source = study
    assert _rerun(out, source) == []
    record = json.loads((out / "stages" / "third.json").read_text())
    assert record["outputs"] == {"c": content_hash(out / "c")}


def test_a_changed_setting_reruns_its_stage_and_everything_downstream(study):
    out, source = study
    assert _rerun(out, source, Settings(times=3)) == ["first", "second", "third"]
    assert _rerun(out, source, Settings(times=3, suffix="?")) == ["second", "third"]
    assert (out / "b.txt").read_text() == "HELLOHELLOHELLODATA?"


def test_a_changed_external_input_reruns_the_stages_that_read_it(study):
    out, source = study
    source.write_text("other data")
    assert _rerun(out, source) == ["first", "second", "third"]
    assert (out / "a.txt").read_text() == "hellohelloother data"


def test_an_edited_output_is_recomputed_and_only_changed_bytes_propagate(study):
    out, source = study
    (out / "a.txt").write_text("tampered")  # the stage reruns and restores its own output
    assert _rerun(out, source) == ["first"]  # same bytes as before: downstream inputs did not change
    assert (out / "a.txt").read_text() == "hellohellodata"
    (out / "c" / "len.txt").write_text("0")  # an output inside a folder counts too
    assert _rerun(out, source) == ["third"]
    (out / "b.txt").unlink()
    assert _rerun(out, source) == ["second"]


def test_a_rerun_that_writes_other_bytes_reruns_its_dependents(study):
    out, source = study
    assert _rerun(out, source, force=("first",)) == ["first"]  # same bytes: dependents stay fresh
    log: list[str] = []
    run_stages(_make_stages(log, source, stamp=" 12:00"), out, Settings(), force=("first",))
    assert log == ["first", "second", "third"]
    source.write_text("data")  # the same content, a new modification time: nothing reruns
    log = []
    run_stages(_make_stages(log, source, stamp=" 12:00"), out, Settings())
    assert log == []


def test_a_killed_stage_leaves_no_record_and_reruns(study):
    out, source = study
    log: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_stages(_make_stages(log, source, fail={"second"}), out, Settings(suffix="?"))
    assert not (out / "stages" / "second.json").exists()  # the old record is gone before the stage runs
    assert _rerun(out, source, Settings(suffix="?")) == ["second", "third"]


def test_unknown_forced_stage_is_refused(study):
    out, source = study
    with pytest.raises(ValueError, match="no such stage"):
        _rerun(out, source, force=("nonsense",))
