"""bench/gpu_check.py's CPU fallback runs every section and writes its JSON, so a GPU's first run
cannot fail for a reason a CPU could have caught (imports, call signatures, the JSON itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_fallback_runs_every_section_without_error(tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--cpu-fallback", "--budget", "300", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["cpu_fallback"] is True
    assert set(report["sections"]) == {"capture", "qlora", "attribution", "study"}
    errors = {name: entry.get("error") for name, entry in report["sections"].items() if not entry["ok"]}
    assert not errors, errors
    assert done.returncode == 0, done.stderr[-2000:]
    sections = report["sections"]
    assert set(sections["capture"]["prompts_per_s"]) == {"plain", "native", "tlens", "nnsight"}
    assert sections["attribution"]["neurons"] == 3 * 128  # every neuron of the tiny llama
    assert sections["qlora"]["trainable_params"] > 0 and sections["qlora"]["loss"] > 0
    assert "train" in sections["study"]["stages"]


def test_gpu_check_without_a_gpu_asks_for_the_fallback(tmp_path):
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--out", str(tmp_path / "x.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--cpu-fallback" in done.stderr
