"""A stage that scores on held-out writing contexts records why it measured nothing when none is left,
instead of stopping the study, and the report says so (never an earlier run's numbers)."""

from __future__ import annotations

import json

import pytest

from interp.causal.where import TooFewContexts
from interp.stages import StageContext
from interp.study.config import StudyConfig


@pytest.mark.parametrize("stage, runner", [("where", "run_where"), ("baselines", "run_baselines"),
                                           ("steer", "run_steer")])
def test_a_stage_without_held_out_contexts_records_why_and_drops_a_stale_result(stage, runner, tmp_path, monkeypatch):
    from interp.causal import experiment
    from interp.study import stages_causal

    (tmp_path / "causal").mkdir()
    (tmp_path / "causal" / "sweep.json").write_text(json.dumps({"choice": {"neurons": [[1, 2]]}}))
    (tmp_path / "behavior").mkdir()
    (tmp_path / "behavior" / "merged.generations.jsonl").write_text("")
    stale = tmp_path / "causal" / f"{stage}.json"
    stale.write_text('{"sentence": "an earlier run"}')

    def too_few(*args, **kwargs):
        raise TooFewContexts("all 7 writing contexts were used to choose the set")

    monkeypatch.setattr(experiment, runner, too_few)
    result = getattr(stages_causal, f"stage_{stage}")(StageContext(tmp_path, StudyConfig()))
    assert result == {"outputs": [], "skipped": "all 7 writing contexts were used to choose the set"}
    assert not stale.exists()


def test_other_errors_still_stop_the_stage(tmp_path, monkeypatch):
    from interp.causal import experiment
    from interp.study import stages_causal

    (tmp_path / "causal").mkdir()
    (tmp_path / "causal" / "sweep.json").write_text(json.dumps({"choice": {"neurons": [[1, 2]]}}))

    def broken(*args, **kwargs):
        raise ValueError("something else")

    monkeypatch.setattr(experiment, "run_where", broken)
    with pytest.raises(ValueError, match="something else"):
        stages_causal.stage_where(StageContext(tmp_path, StudyConfig()))


def test_the_report_names_why_where_and_the_baselines_were_not_measured(tmp_path):
    from interp.report.build import build_report

    (tmp_path / "stages").mkdir()
    reason = "7 of 7 writing contexts were used to choose the set, leaving 0"
    for stage in ("where", "steer"):
        (tmp_path / "stages" / f"{stage}.json").write_text(json.dumps({"stage": stage, "seconds": 1.0, "finished": "now", "result": {"skipped": reason}}))
    build_report(tmp_path)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Where the change lives: not measured" in report
    assert f"**where:** {reason}." in report and f"**steer:** {reason}." in report
    assert json.loads((tmp_path / "summary.json").read_text())["where"] == {"skipped": reason}
