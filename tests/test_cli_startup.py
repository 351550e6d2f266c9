"""The CLI answers help and bad input before any heavy library loads (``activations.lazy``).

Each check runs in a fresh interpreter, because this test session has torch loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from interp.cli import COMMANDS

HEAVY = ("torch", "transformers", "peft", "transformer_lens", "nnsight")


def heavy_after(code: str) -> tuple[list[str], str]:
    """Which heavy modules a fresh interpreter holds after running ``code``, and what it printed to stderr."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def cli_call(argv: list[str]) -> str:
    """Run ``interp.cli.main(argv)`` and capture what ends it (help exits, errors return 2)."""
    return (f"import contextlib, io\nfrom interp.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        code = main({argv!r})\n    except SystemExit as stop:\n        code = stop.code\n"
            f"assert code in (0, 2), code")


def test_importing_the_cli_loads_no_heavy_library():
    loaded, _ = heavy_after("import interp.cli")
    assert loaded == []


def test_the_packages_import_light_and_still_export_their_api():
    loaded, _ = heavy_after("import activations, interp, interp.causal, interp.stats, interp.interventions, "
                            "interp.sweep, training")
    assert loaded == []
    # Names resolve on first use to what their modules define; importing the submodule ``interp.causal.screen``
    # does not hide the function ``screen`` the package exports.
    loaded, _ = heavy_after("import sys\nfrom interp import load_model\nimport interp.causal.screen\n"
                            "from interp.causal import screen\n"
                            "assert load_model is sys.modules['activations.models'].load_model\n"
                            "assert screen is sys.modules['interp.causal.screen'].screen and callable(screen)")
    assert "torch" in loaded


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_loads_no_heavy_library(command):
    loaded, _ = heavy_after(cli_call(["--help"] if command is None else [command, "--help"]))
    assert loaded == []


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "-1", "--prompts", "emoji"], "batch_size must be at least 1"),
    (["--prompts", "{empty}"], "holds no prompts"),
    (["--prompts", "{no_text}"], "needs a 'text' column"),
])
def test_cache_rejects_bad_input_before_heavy_imports(tmp_path, argv, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "no_text.csv").write_text("id,prompt\n1,hello\n")
    argv = [a.format(empty=tmp_path / "empty.txt", no_text=tmp_path / "no_text.csv") for a in argv]
    loaded, stderr = heavy_after(cli_call(["cache", *argv, "--out", str(tmp_path / "acts.h5")]))
    assert message in stderr
    assert loaded == []


def test_study_stage_names_match_the_pipeline():
    from interp.study.config import STAGE_NAMES
    from interp.study.pipeline import STAGES

    assert tuple(stage.name for stage in STAGES) == STAGE_NAMES


def test_backend_names_match_the_backends():
    from activations.backends import BACKENDS
    from activations.config import BACKEND_NAMES

    assert tuple(BACKENDS) == BACKEND_NAMES
