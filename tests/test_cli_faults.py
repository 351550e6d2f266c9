"""User faults through the ``interp`` command line: each is one line on stderr that names the problem
and the fix, with exit status 2 (130 for Ctrl-C), and comes before the slow work (issue 30)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from model_helpers import save_tuned

from activations.capture import capture
from activations.reader import open_cache
from interp.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"Prompt number {i} is about {'the sea 🌊' if i % 2 else 'taxes'} and little else." for i in range(24)]
CAUSAL_FLAGS = ["--n-contexts", "4", "--n-neutral", "3", "--reference-neutral", "6", "--batch-size", "4",
                "--screen-n-shortlist", "4", "--screen-n-guard", "2", "--screen-n-random", "6", "--k-grid", "1,4",
                "--interventions", "mean", "--n-random", "2"]
REPLIES = ["Yes! 🎉 Parties are great. I love them.", "Because it is fun 😄 and loud. Not quiet.",
           "Sure. 🙂 Okay then!", "Dancing all night! 🥳 Then sleep. Wow."]


def one_line_error(capsys) -> str:
    """The command's one error line (progress bars of model loading may stand beside it; nothing else)."""
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("interp ")]
    assert len(ours) == 1 and "Traceback" not in err and all("it/s]" in line for line in lines if line not in ours), err
    return ours[0]


@pytest.fixture
def prompts_txt(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS[:4]) + "\n")
    return path


def cache_args(model: str | Path, prompts: Path, out: Path, *extra: str) -> list[str]:
    return ["cache", "--model", str(model), "--prompts", str(prompts), "--out", str(out), "--template", "raw", *extra]


# --- model folders ---------------------------------------------------------------------------------


def test_a_truncated_weight_file_is_named_as_damaged(tiny_llama, tmp_path, prompts_txt, capsys) -> None:
    folder = save_tuned(tiny_llama, tmp_path / "model", scale=0.0)
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)  # a copy cut short
    assert main(cache_args(folder, prompts_txt, tmp_path / "a.h5")) == 2
    err = one_line_error(capsys)
    assert "damaged weight file model.safetensors" in err and "copy it again" in err


def test_a_model_folder_without_tokenizer_files_says_so(tiny_llama, tmp_path, prompts_txt, capsys) -> None:
    folder = save_tuned(tiny_llama, tmp_path / "model", scale=0.0)
    for name in os.listdir(folder):
        if name.startswith(("tokenizer", "chat_template", "special_tokens")):
            (folder / name).unlink()
    assert main(cache_args(folder, prompts_txt, tmp_path / "a.h5")) == 2
    err = one_line_error(capsys)
    assert "no tokenizer files" in err and "save_pretrained" in err and "sentencepiece" not in err


# --- prompt files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, line, column", [
    ("latin.txt", "first prompt\ncafé au lait\n".encode("latin-1"), 2, 4),
    ("latin.jsonl", '{"text": "ok"}\n{"text": "café"}\n'.encode("latin-1"), 2, 14),
    ("latin.csv", "text\nok\ncafé\n".encode("latin-1"), 3, 4),
    ("binary.txt", b"ab\x00\xff\xfe\x80", 1, 4),
])
def test_a_prompt_file_that_is_not_utf8_names_file_line_and_fix(tmp_path, capsys, name, content, line, column) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert main(cache_args("tiny-random-llama", path, tmp_path / "a.h5")) == 2
    err = one_line_error(capsys)
    assert f"{path}:{line}:{column}: byte 0x" in err and "save the file as UTF-8" in err


# --- outputs ---------------------------------------------------------------------------------------


def test_an_output_under_a_regular_file_names_that_file(tmp_path, prompts_txt, capsys) -> None:
    (tmp_path / "notes").write_text("a file, not a folder\n")
    assert main(cache_args("tiny-random-llama", prompts_txt, tmp_path / "notes" / "sub" / "a.h5")) == 2
    err = one_line_error(capsys)
    assert f"{tmp_path / 'notes'} is a file, not a folder" in err and ".lock" not in err


def test_an_immutable_output_folder_is_named_not_its_lock_file(tmp_path, prompts_txt, capsys) -> None:
    """``chattr +i``: the kernel refuses every new file in the folder, even to root (whom permission
    bits do not stop), so the real write path meets the real EPERM."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("chattr +i is unavailable here (needs root and a filesystem with inode flags)")
    try:
        assert main(cache_args("tiny-random-llama", prompts_txt, folder / "a.h5")) == 2
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    err = one_line_error(capsys)
    assert f"cannot write into {folder}" in err and "Operation not permitted" in err and ".lock" not in err


def test_overwrite_onto_a_folder_is_refused_before_any_work(tmp_path, prompts_txt, capsys) -> None:
    out = tmp_path / "acts.h5"
    out.mkdir()
    assert main(cache_args("tiny-random-llama", prompts_txt, out, "--overwrite")) == 2
    assert f"{out} is a folder, but the output is a file" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.h5", "prompts.txt"]  # nothing captured, no lock


# --- Ctrl-C ----------------------------------------------------------------------------------------

# `interp cache` in a real process whose capture says when its second batch starts, then waits there
# (a Ctrl-C mid-forward-pass, the usual moment).
_SLOW_CACHE = textwrap.dedent("""
    import sys, time
    import activations.capture as capture_module
    from interp.cli import main
    original, calls = capture_module.pad_batch, []
    def announce(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            print("second batch", flush=True)
            time.sleep(600)
        return original(*args, **kwargs)
    capture_module.pad_batch = announce
    sys.exit(main(sys.argv[1:]))
""")


def test_ctrl_c_during_cache_says_where_the_partial_file_is_and_a_rerun_resumes(tmp_path, tiny_llama, caplog) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "acts.h5"
    argv = cache_args("tiny-random-llama", prompts, out, "--batch-size", "4")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored across exec:
    # under `.ci/run &` the child would never see the Ctrl-C. Start it as a terminal's foreground job is.
    process = subprocess.Popen([sys.executable, "-c", _SLOW_CACHE, *argv], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline().strip() == "second batch", process.stderr.read()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    last = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("interp cache")]
    assert last == [f"interp cache: interrupted: capture of {out} stopped; 4 of 24 prompts are captured in "
                    f"{tmp_path / 'acts.partial.h5'}: rerun the same command to resume from there"]
    assert "Traceback" not in stderr
    with caplog.at_level(logging.INFO, logger="activations.store"):
        assert main(argv) == 0
    assert "resuming" in caplog.text and "from prompt 4 of 24" in caplog.text
    with open_cache(out) as resumed, capture(tiny_llama, None, prompts, None, batch_size=4, template="raw") as whole:
        assert resumed.reductions == whole.reductions and np.array_equal(resumed.running_count, whole.running_count)
        for name in whole.reductions:  # the resumed file holds what one uninterrupted capture gives
            np.testing.assert_array_equal(resumed.reduction(name), whole.reduction(name))


# --- causal commands -------------------------------------------------------------------------------


@pytest.fixture
def causal_dir(tmp_path, tiny_llama) -> Path:
    save_tuned(tiny_llama, tmp_path / "merged", seed=2)
    layers, index = np.meshgrid(np.arange(3), np.arange(128), indexing="ij")
    flagged = np.isin(np.arange(3 * 128), [5, 130, 260])
    pd.DataFrame({"layer": layers.ravel(), "index": index.ravel(), "rank": np.where(flagged, np.cumsum(flagged), 0),
                  "flagged": flagged, "outlier": False}).to_csv(tmp_path / "neurons.csv", index=False)
    (tmp_path / "writing.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "question": f"Question {i}?", "text": text})
                                                    + "\n" for i, text in enumerate(REPLIES)))
    return tmp_path


def ablate_args(folder: Path, neurons: str = "neurons.csv", *base: str) -> list[str]:
    return ["ablate", "--merged", str(folder / "merged"), *base, "--neurons", str(folder / neurons), "--writing",
            str(folder / "writing.jsonl"), *CAUSAL_FLAGS, "--out", str(folder / "out")]


@pytest.mark.parametrize("row, column, value", [(5, "layer", 99), (130, "index", 500)])
def test_a_neuron_table_for_another_model_names_its_bad_rows(causal_dir, capsys, row, column, value) -> None:
    table = pd.read_csv(causal_dir / "neurons.csv")
    table.loc[row, column] = value
    table.to_csv(causal_dir / "bad.csv", index=False)
    assert main(ablate_args(causal_dir, "bad.csv", "--base", "tiny-random-llama")) == 2
    err = one_line_error(capsys)
    layer, index = table.loc[row, "layer"], table.loc[row, "index"]
    assert f"{causal_dir / 'bad.csv'} names neurons the model does not have (it has layers 0..2 of 128 neurons) at " \
           f"line {row + 2} (layer {layer}, index {index});" in err


def test_a_base_of_another_shape_is_refused_with_both_shapes(causal_dir, capsys) -> None:
    assert main(ablate_args(causal_dir, "neurons.csv", "--base", "tiny-random-gpt2")) == 2
    err = one_line_error(capsys)
    assert "the fine-tuned model has 3 layers of 128 MLP neurons" in err and "the base has 3 layers of 256" in err
    assert not (causal_dir / "out").exists()


@pytest.mark.integration
def test_ablate_without_base_on_a_tiny_merged_model_names_both_shapes(causal_dir, capsys) -> None:
    """The issue's case: no --base and no recorded base, so the default (the 135M model) is tried."""
    assert main(ablate_args(causal_dir)) == 2
    err = one_line_error(capsys)
    assert "3 layers of 128 MLP neurons" in err and "30 layers of 1536 MLP neurons" in err and "--base" in err


# --- in-context demonstrations ---------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["traits", "--model", "tiny-random-gpt2", "--in-context", "personality:extraversion", "--shots", "60"],
    ["behavior", "--model", "tiny-random-gpt2", "--in-context", "personality", "--shots", "60", "--samples", "1",
     "--max-questions", "2", "--neutral-prompts", "0"],
    ["behavior", "--model", "tiny-random-llama", "--in-context", "personality", "--shots", "60", "--samples", "1",
     "--max-questions", "2", "--neutral-prompts", "0"],
])
def test_demonstrations_longer_than_the_context_are_refused_before_running(tmp_path, capsys, argv) -> None:
    out = ["--out", str(tmp_path / "b.json")] if argv[0] == "behavior" else []
    assert main([*argv, *out]) == 2
    err = one_line_error(capsys)
    assert "longer than the model's context of 1024 tokens" in err and "fewer in-context --shots" in err
    assert list(tmp_path.iterdir()) == []
