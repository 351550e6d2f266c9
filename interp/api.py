"""The notebook API: record any model on any prompts, diff two models or two prompt sets, edit neurons.

    from interp import ablate, diff, load_model, record

    base, tuned = load_model("smollm2-135m-instruct"), load_model("runs/merged")
    prompts = ["Great day at the beach 🏖️", "Team meeting at nine."]
    d = diff(base=record(base, prompts), merged=record(tuned, prompts))   # two models, one prompt set
    d.table.head()                                                         # pandas, one row per neuron
    with ablate(tuned, "blocks.29.mlp.hook_post", [12, 40]):
        ...

``record`` captures into memory unless ``out`` names a file (then it is the same HDF5 cache the CLI
writes, resumable). ``diff`` picks the design from what it is given: one prompt set recorded by two
models tests the fine-tune's change; two prompt sets recorded by one model (paired by prompt id)
test the difference between the sets; a behaviour's reading conditions (``emoji``, ``filler-a``, ``filler-b``)
get its reading design (``interp.stats.designs``). Every result is typed, with ``.table`` and ``.save()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from activations.capture import capture
from activations.models import LoadedModel, load_model
from activations.prompt_sets import PromptSet
from activations.reader import ActivationCache
from interp.stats.contrasts import DiffDesign
from interp.stats.designs import FILLER_A, FILLER_B, condition_contrast, model_change, reading_design_for
from interp.stats.diff import DiffConfig, DiffResult, diff_inputs
from interp.stats.loading import load_design_inputs

PROMPTS = "prompts"
"""The condition name a lone recording gets."""


def record(model: LoadedModel | nn.Module | str, prompts: PromptSet | Sequence[str] | str | os.PathLike, *,
           tokenizer: PreTrainedTokenizerBase | None = None, out: str | os.PathLike | None = None,
           overwrite: bool = False, **options: Any) -> ActivationCache:
    """Every MLP neuron of ``model`` on ``prompts``, reduced per prompt (``activations.capture``).

    ``model``: a ``LoadedModel``, a spec for ``load_model``, or a module with ``tokenizer``.
    ``prompts``: a ``PromptSet``, a list of strings, a built-in set name or a prompt file.
    ``out``: None keeps the cache in memory; a path writes (and resumes) the HDF5 file.
    ``options``: any ``CaptureConfig`` field, e.g. ``layers=[20, 29]``, ``template="raw"``."""
    if isinstance(model, str):
        model = load_model(model)
    if isinstance(prompts, (list, tuple)) and not isinstance(prompts, PromptSet):
        prompts = list(prompts)
    return capture(model, tokenizer, prompts, out, overwrite=overwrite, **options)


Recorded = ActivationCache | str | os.PathLike | Mapping[str, Any]


def _conditions(source: Recorded | None) -> Mapping[str, Any] | str | os.PathLike | None:
    if source is None or isinstance(source, Mapping):
        return source
    if isinstance(source, ActivationCache) or (Path(source).suffix == ".h5"):
        return {PROMPTS: source}
    return source  # a directory of CONDITION.h5 files


def _names(source: Mapping[str, Any] | str | os.PathLike | None) -> list[str]:
    if source is None:
        return []
    if isinstance(source, Mapping):
        return list(source)
    return sorted(p.stem for p in Path(source).glob("*.h5") if not p.name.endswith(".partial.h5"))


def choose_design(base: Any, merged: Any, reduction: str = "content_mean") -> DiffDesign:
    """The design ``diff`` uses when none is given (module docstring)."""
    names = set(_names(base)) | set(_names(merged))
    if {FILLER_A, FILLER_B} <= names:
        return reading_design_for(names)
    if base is not None and merged is not None and len(names) == 1:
        return model_change(names.pop(), reduction)
    lone = base if merged is None else merged if base is None else None
    if lone is not None and len(_names(lone)) == 2:
        first, second = _names(lone)
        return condition_contrast(first, second, reduction, model="base")
    raise ValueError(f"cannot tell what to compare from conditions {sorted(names)}: give base and merged recordings "
                     "of one prompt set, one model's recordings of two prompt sets, or a design")


def diff(base: Recorded | None = None, merged: Recorded | None = None, *, design: DiffDesign | None = None,
         config: DiffConfig | None = None, reduction: str = "content_mean") -> DiffResult:
    """Test every neuron (``interp.stats.diff``) on recordings from ``record`` (or cache paths).

    ``base`` / ``merged``: one recording, a mapping condition -> recording, or a directory of
    ``CONDITION.h5``. One model's two prompt sets go in ``base`` alone (their prompts paired by id)."""
    base, merged = _conditions(base), _conditions(merged)
    if base is None and merged is None:
        raise ValueError("diff needs recordings: diff(base=record(model_a, prompts), merged=record(model_b, prompts))")
    if merged is not None and base is None:
        base, merged = merged, None
    design = design or choose_design(base, merged, reduction)
    return diff_inputs(load_design_inputs(design, base, merged), design, config)
