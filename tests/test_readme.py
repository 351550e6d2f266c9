"""The README's Python examples run as written, with a tiny model standing in for the real ones."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import torch

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
    tuned = copy.deepcopy(tiny_llama.model)  # a stand-in for the study's fine-tune, saved as a folder
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "mlp" in name:
                param.add_(torch.randn(param.shape, generator=generator) * param.std() * 0.5)
    tuned.save_pretrained(tmp_path / "merged")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "merged")
    standins = {'"smollm2-135m-instruct"': '"tiny-random-llama"', '"reports/merged"': f'"{tmp_path / "merged"}"'}
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
