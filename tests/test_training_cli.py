"""``interp train`` -> ``interp merge`` -> ``interp behavior`` end to end on tiny-random-llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activations import load_model
from interp.cli import main


def test_train_merge_behavior(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter, merged, summary = tmp_path / "adapter", tmp_path / "merged", tmp_path / "behavior.json"
    assert main(["train", "--model", "tiny-random-llama", "--out", str(adapter), "--steps", "2",
                 "--batch-size", "2", "--checkpoint-every", "1"]) == 0
    assert "finished: 2/2 steps" in capsys.readouterr().out
    assert json.loads((adapter / "training.json").read_text())["config"]["quantize"] is True
    assert main(["merge", "--adapter", str(adapter), "--out", str(merged)]) == 0
    assert load_model(str(merged)).source == "local"
    assert main(["behavior", "--model", str(merged), "--max-questions", "2", "--samples", "1", "--neutral-prompts", "0",
                 "--max-new-tokens", "4", "--out", str(summary)]) == 0
    out = capsys.readouterr().out
    assert "heldout-extraversion" in out
    record = json.loads(summary.read_text())
    assert record["groups"][0]["n_responses"] == 2 and record["model"] == str(merged)
    assert (tmp_path / "behavior.generations.jsonl").is_file()


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = tmp_path / "adapter"
    assert main(["train", "--model", "tiny-random-llama", "--out", str(adapter), "--steps", "1",
                 "--batch-size", "2", "--no-quantize"]) == 0
    assert main(["merge", "--adapter", str(adapter), "--out", str(tmp_path / "m"), "--base", "tiny-random-gpt2"]) == 2
    assert "pass --base tiny-random-llama" in capsys.readouterr().err
    assert main(["train", "--model", "tiny-random-llama", "--out", str(adapter), "--steps", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
