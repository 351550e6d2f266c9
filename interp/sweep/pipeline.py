"""``interp sweep``: the five traits x {personality, injection}, fine-tuned and prompted, side by side.

Stages (``interp.stages``: resumable, each record chained on the content of what it read, so a
changed setting or file reruns exactly what depends on it):

- ``measure-base-T``: the base model on trait T (one per trait, shared by every row of T);
- ``train-S-T`` -> ``merge-S-T`` -> ``measure-S-T``: the fine-tune on study S's rows of trait T;
- ``measure-in-context-S-T``: the base model shown S's training rows of T in context;
- ``neurons-T``: the in-context vs fine-tuned neuron overlap (``interp.sweep.neurons``);
- ``report``: ``sweep.json``, ``sweep.csv``, ``sweep.md``, ``report.html`` and the figure.

Layout under the sweep directory: ``base/T``, ``S/T`` (with ``adapter`` and ``merged``),
``in-context-S/T``, ``neurons/T``, ``stages/``, ``sweep.json`` (the settings, as ``sweep-config.json``).
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from pathlib import Path
from typing import Any

from activations.atomic_io import write_json_atomic
from interp.configargs import config_from_json
from interp.stages import Stage, StageContext, relative, run_stages
from interp.sweep.config import TraitSweepConfig
from interp.sweep.measure import Condition, measure
from interp.sweep.neurons import arms
from interp.sweep.table import conditions

log = logging.getLogger(__name__)

MEASURE_READS = ("model", "seed", "samples", "questions", "max_new_tokens")
TRAIN_READS = ("model", "seed", "train_steps", "learning_rate", "quantize")


def _voice_inputs(config: TraitSweepConfig) -> list[Path]:
    """What the report's voice measure is trained and checked on (``training.trait_classifier``)."""
    from training.data import default_data_path
    from training.trait_classifier import VOICE_CORPUS

    return [VOICE_CORPUS, default_data_path()]


def _data_inputs(config: TraitSweepConfig) -> list[Path]:
    from training.data import default_data_path
    from training.inventory import default_inventory_path

    return [default_data_path(), default_inventory_path()]


def _train(ctx: StageContext, study: str, trait: str) -> dict[str, Any]:
    from training.config import TrainConfig
    from training.qlora import train_or_resume

    c: TraitSweepConfig = ctx.config
    out = ctx.path(study, trait, "adapter")
    config = TrainConfig(study=study, trait=trait, model=c.model, steps=c.train_steps, learning_rate=c.learning_rate,
                         quantize=c.quantize, seed=c.seed)
    result = train_or_resume(config, out)
    return {"outputs": [relative(ctx.out, out / name) for name in ("adapter_config.json", "adapter_model.safetensors",
                                                                    "training.json")],
            "steps": result.steps_done, "final_loss": result.loss_history[-1], "train_seconds": round(result.seconds, 1)}


def _merge(ctx: StageContext, study: str, trait: str) -> dict[str, Any]:
    from training.merge import merge_adapter

    out = ctx.path(study, trait, "merged")
    result = merge_adapter(ctx.path(study, trait, "adapter"), out, overwrite=True)
    return {"outputs": [relative(ctx.out, out)], "merged_fingerprint": result.merged_fingerprint}


def _measure(ctx: StageContext, condition: Condition) -> dict[str, Any]:
    c: TraitSweepConfig = ctx.config
    spec = str(ctx.path(condition.folder, "merged")) if condition.kind == "fine-tuned" else c.model
    summary = measure(spec, condition, c, ctx.path(condition.folder))
    return {**summary, "outputs": [relative(ctx.out, Path(p)) for p in summary.pop("files")]}


def _neurons(ctx: StageContext, trait: str) -> dict[str, Any]:
    from interp.sweep.neurons import neuron_overlap

    c: TraitSweepConfig = ctx.config
    out = ctx.path("neurons", trait)
    merged = {(a.study, a.trait): ctx.path(a.study, a.trait, "merged") for a in arms(c, trait) if a.kind == "fine-tuned"}
    result = neuron_overlap(c, trait, merged, out)
    write_json_atomic(out / "overlap.json", result)
    return {"outputs": [relative(ctx.out, out / "overlap.json")],
            "flagged": {s["name"]: s["n_flagged"] for s in result["sets"]}}


def _report(ctx: StageContext) -> dict[str, Any]:
    from interp.sweep.report import write_report

    return {"outputs": [relative(ctx.out, p) for p in write_report(ctx.out, ctx.config)]}


def sweep_stages(config: TraitSweepConfig) -> tuple[Stage, ...]:
    """The stages of ``config``, in the order they run (module docstring)."""
    stages: list[Stage] = []
    for condition in conditions(config):
        trait, study = condition.trait, condition.study
        depends: tuple[str, ...] = ()
        reads = MEASURE_READS
        if condition.kind == "fine-tuned":
            stages.append(Stage(f"train-{study}-{trait}", partial(_train, study=study, trait=trait), (), TRAIN_READS,
                                _data_inputs))
            stages.append(Stage(f"merge-{study}-{trait}", partial(_merge, study=study, trait=trait),
                                (f"train-{study}-{trait}",)))
            depends = (f"merge-{study}-{trait}",)
        elif condition.kind == "in-context":
            reads = (*MEASURE_READS, "shots")
        stages.append(Stage(condition.stage, partial(_measure, condition=condition), depends, reads, _data_inputs))
    for trait in config.neuron_traits:
        stages.append(Stage(f"neurons-{trait}", partial(_neurons, trait=trait),
                            tuple(f"merge-{a.study}-{a.trait}" for a in arms(config, trait) if a.kind == "fine-tuned"),
                            ("model", "seed", "questions", "shots", "in_context", "studies", "traits", "delta",
                             "capture_batch"), _data_inputs, version=3))
    upstream = tuple(s.name for s in stages if s.name.startswith(("measure-", "neurons-")))
    stages.append(Stage("report", _report, upstream, ("traits", "studies", "in_context", "neuron_traits", "seed"),
                        _voice_inputs, version=3))
    return tuple(stages)


def run_sweep(config: TraitSweepConfig, out: str | Path, *, force: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Run (or resume) the sweep into ``out``; fresh stages are skipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "sweep-config.json", dataclasses.asdict(config))
    return run_stages(sweep_stages(config), out, config, force=force, published=("report",))


def read_sweep_config(out: str | Path) -> TraitSweepConfig:
    """The settings a sweep directory was last run with."""
    return config_from_json(Path(out) / "sweep-config.json", TraitSweepConfig,
                            f"{out} holds no sweep; run `interp sweep --out {out}` first")
