"""`interp run --quick` on the tiny model: every stage, report files, skip on rerun, resume after a kill."""

from __future__ import annotations

import json

import pytest

from interp.cli import main
from interp.study import pipeline
from interp.study.config import StudyConfig
from interp.study.pipeline import run_study

QUICK = StudyConfig(model="tiny-random-llama").quick_variant()
COMPARED = ("behavior", "neurons", "ablation", "patching", "attribution")


def _numbers(summary: dict) -> dict:
    """The study's results, without wall-clock figures (which differ from run to run)."""
    numbers = {key: summary.get(key) for key in COMPARED}
    numbers["attribution"] = {k: v for k, v in (numbers["attribution"] or {}).items()
                              if k in ("spearman", "sign_agreement")}
    return numbers


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    assert main(["run", "--model", "tiny-random-llama", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_study_writes_report(finished) -> None:
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["study"] == "injection" and summary["quick"] is True
    for key in ("behavior", "neurons", "ablation", "patching", "timings"):
        assert key in summary, key
    assert 0.0 <= summary["behavior"]["merged"]["emoji_rate"] <= 1.0
    assert len(summary["behavior"]["merged"]["ci"]) == 2
    assert set(summary["neurons"]["counts"]) >= {"activated", "amplified", "suppressed", "emoji_selective"}
    assert [p["k"] for p in summary["ablation"]["per_k"]] == list(StudyConfig().quick_variant().k_grid)
    html = (finished / "report.html").read_text()
    assert "QUICK RUN" in html and html.count("data:image/png;base64,") >= 4
    assert (finished / "report.md").read_text().count("](figures/") >= 4


def test_rerun_skips_every_stage(finished, caplog) -> None:
    caplog.set_level("INFO")
    before = (finished / "summary.json").read_text()
    records = run_study(QUICK, finished)
    assert sum("skipped" in r.message for r in caplog.records) == len(pipeline.STAGES)
    assert all(record.get("skipped") is True for record in records.values())
    assert (finished / "summary.json").read_text() == before


def test_report_rebuilds_without_recomputing(finished) -> None:
    (finished / "report.html").unlink()
    assert main(["report", str(finished)]) == 0
    assert (finished / "report.html").is_file()


def test_killed_run_resumes_to_same_numbers(finished, tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    real_capture = pipeline.capture

    def dying_capture(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the first cache of the merged model: a kill in the middle of the stage
            raise KeyboardInterrupt
        return real_capture(*args, **kwargs)

    monkeypatch.setattr(pipeline, "capture", dying_capture)
    with pytest.raises(KeyboardInterrupt):
        run_study(QUICK, tmp_path)
    assert not (tmp_path / "stages" / "cache.json").exists()
    monkeypatch.setattr(pipeline, "capture", real_capture)
    run_study(QUICK, tmp_path)
    resumed = json.loads((tmp_path / "summary.json").read_text())
    uninterrupted = json.loads((finished / "summary.json").read_text())
    assert _numbers(resumed) == _numbers(uninterrupted)


def test_force_unknown_stage_is_refused(finished) -> None:
    with pytest.raises(ValueError, match="no such stage"):
        run_study(QUICK, finished, force=("nonsense",))
