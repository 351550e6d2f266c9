"""The README's Python examples run as written, with a tiny model standing in for the real ones."""

from __future__ import annotations

import os
import re
from pathlib import Path

from model_helpers import save_tuned

README = Path(__file__).resolve().parents[1] / "README.md"


def python_examples() -> list[str]:
    """The ```python blocks of the README's "From Python" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_readme_has_python_examples() -> None:
    blocks = python_examples()
    assert len(blocks) >= 2 and all("import" in block or "record" in block for block in blocks)


def test_the_readme_python_examples_run(tmp_path, tiny_llama) -> None:
    save_tuned(tiny_llama, tmp_path / "merged")  # a stand-in for the study's fine-tune
    standins = {'"smollm2-135m-instruct"': '"tiny-random-llama"', '"reports/merged"': f'"{tmp_path / "merged"}"',
                '"blocks.29.mlp.hook_post"': '"blocks.2.mlp.hook_post"',  # the tiny model has 3 layers
                # 3 x 128 neurons hold no matched random sets of 300: the sweep's grid shrinks with the model
                "replies=replies)": "replies=replies,\n    sweep_config=__import__('interp.causal').causal.SweepConfig("
                                    "k_grid=(1, 4, 16), n_random=4))"}
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)  # examples that save files write them here
    try:
        for block in python_examples():
            for real, standin in standins.items():
                block = block.replace(real, standin)
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own examples
    finally:
        os.chdir(cwd)
    assert "d" in namespace and len(namespace["d"].table) == 3 * 128
    assert (tmp_path / "suppressed" / "config.json").is_file() and namespace["found"].behavior.noun == "stage direction"
