"""The pre-flight planner: shapes counted exactly, disk and memory arithmetic by hand, a measured
capture within the stated error, the fit check and the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from activations.config import DEFAULT_REDUCTIONS
from activations.random_models import shape_config
from activations.shapes import SHAPES
from interp.cli import main
from interp.plan import (BYTES, MB, RUNTIME_MB, STATS_BYTES_PER_NEURON, PlanConfig, check_fits, load_shape, plan,
                         preflight)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(SHAPES))
def test_parameter_and_neuron_counts_equal_the_model_transformers_builds(name):
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(shape_config(name))
    shape = load_shape(name)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert shape.neurons == model.config.num_hidden_layers * model.config.intermediate_size


def test_published_sizes():
    assert load_shape("mistral-7b").neurons == 458_752 and load_shape("llama-2-7b").neurons == 352_256
    assert load_shape("mistral-7b").params == 7_241_732_096  # Mistral-7B-v0.1's model card count


def test_disk_and_capture_memory_by_hand():
    shape = load_shape("mistral-7b")
    config = PlanConfig(prompts=1000, tokens_per_prompt=50, batch_size=4, store_tokens=True, dtype="bfloat16")
    estimate = plan(shape, config).stage("capture")
    n = 458_752
    reductions = 1000 * n * 4 * len(DEFAULT_REDUCTIONS)
    tokens = 1000 * 50 * n * 2
    assert estimate.disk_mb == pytest.approx((reductions + tokens + n * STATS_BYTES_PER_NEURON) / MB)
    weights = 7_241_732_096 * 2
    batch = 4 * 50 * n * 2
    largest = 32000 * 4096 * 2
    expected = RUNTIME_MB + (weights + 3 * n * STATS_BYTES_PER_NEURON + 2 * batch + 4 * n * 4 * len(DEFAULT_REDUCTIONS)
                             + largest) / MB
    assert estimate.peak_mb == pytest.approx(expected)
    assert plan(shape, PlanConfig(dtype="float32")).stage("capture").peak_mb > estimate.peak_mb + 13_000  # 4 vs 2 bytes


MEASURE = """
import json, sys
from pathlib import Path
from activations import load_model
from activations.capture import capture
from activations.config import CaptureConfig
from activations.prompt_sets import PromptSet, load_prompt_set
from activations.roles import encode_prompt_set
loaded = load_model(sys.argv[1])
prompts = PromptSet.from_texts(list(load_prompt_set("neutral").texts[:48]))
tokens = sum(len(e) for e in encode_prompt_set(loaded.tokenizer, prompts, CaptureConfig().template))
capture(loaded, None, prompts, sys.argv[2], batch_size=16)
hwm = next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM"))
print(json.dumps({"peak_mb": hwm / 1024, "tokens": tokens, "prompts": len(prompts), "disk_mb": Path(sys.argv[2]).stat().st_size / 2**20}))
"""


def test_predicted_capture_memory_within_25_percent_of_a_measured_capture_and_disk_an_upper_bound(tmp_path, tiny_llama):
    config = LlamaConfig(vocab_size=len(tiny_llama.tokenizer), hidden_size=256, intermediate_size=4096,
                         num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         pad_token_id=tiny_llama.tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    folder = tmp_path / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    out = subprocess.run([sys.executable, "-c", MEASURE, str(folder), str(tmp_path / "acts.h5")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    per_prompt = round(measured["tokens"] / measured["prompts"])
    estimate = plan(load_shape(str(folder)), PlanConfig(prompts=measured["prompts"], tokens_per_prompt=per_prompt,
                                                        batch_size=16, dtype="float32")).stage("capture")
    assert abs(estimate.peak_mb / measured["peak_mb"] - 1) < 0.25, (estimate.peak_mb, measured)
    # disk is the uncompressed size: LZF shrinks the file (NaN reductions of prompts without marks above all)
    assert measured["disk_mb"] <= estimate.disk_mb <= 2 * measured["disk_mb"], (estimate.disk_mb, measured)


def test_check_fits_refuses_with_the_shortfall_and_passes_what_fits():
    estimate = plan(load_shape("mistral-7b"), PlanConfig(dtype="bfloat16"))
    message = check_fits(estimate.stage("capture"), available=8_000)
    assert message.startswith("capture needs about") and "8" in message and "--batch-size" in message
    assert check_fits(estimate.stage("capture"), available=10 * estimate.stage("capture").peak_mb) is None
    assert preflight("mistral-7b", prompts=10, available=1_000) is not None
    assert preflight("mistral-7b", prompts=10, available=1e7) is None
    assert preflight("tiny-random-llama", prompts=10, available=1) is None  # no config to read: no refusal


def test_plan_command_prints_every_stage_and_json(capsys):
    assert main(["plan", "--model", "llama-2-7b", "--prompts", "100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["stage"] for s in data["stages"]] == ["capture", "diff", "attribution", "proxy", "export"]
    assert data["stages"][0]["peak_mb"] > 6_738_415_616 * BYTES["bfloat16"] / MB
    assert main(["plan", "--model", "smollm2-135m-instruct"]) == 0
    assert "46,080 neurons" in capsys.readouterr().out
    assert main(["plan", "--model", "no-such-model"]) == 2


def test_cache_refuses_a_capture_that_would_not_fit(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("interp.plan.available_mb", lambda: 1_000.0)
    assert main(["cache", "--model", "smollm2-135m-instruct", "--prompts", "neutral", "--out", str(tmp_path / "a.h5")]) == 2
    assert "capture needs about" in capsys.readouterr().err
    assert not (tmp_path / "a.h5").exists()


def test_run_refuses_a_study_that_would_not_fit_before_any_stage(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("interp.plan.available_mb", lambda: 1_000.0)
    assert main(["run", "--model", "smollm2-135m-instruct", "--out", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "--skip-plan-check" in err
    assert not (tmp_path / "study" / "stages").exists()


def test_planner_imports_no_torch():
    code = "import sys, interp.plan, interp.commands.plan; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0
