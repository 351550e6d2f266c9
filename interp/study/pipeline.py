"""The default study, stage by stage: fine-tune -> merge -> behaviour -> caches -> neuron statistics
-> examples -> causal (screen + sweep) -> suppressor -> separability -> where the change lives -> steering the base -> baselines -> report.

Every stage reads the outputs of earlier ones from the study directory and writes its own there,
so ``interp report DIR`` can rebuild the report from files alone; ``interp.stages`` chains
each stage's record on the content of what it read. The stage bodies only wire files to the public
API (the same functions ``interp train``, ``interp cache``, ``interp diff``, ``interp ablate`` and
``interp suppress`` call).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from activations import load_model
from activations.atomic_io import write_json_atomic
from interp.configargs import config_from_json
from interp.study.config import STAGE_NAMES, StudyConfig
from interp.stages import Stage, StageContext, relative, run_stages, stale_stages
from interp.study.stages_causal import (stage_baselines, stage_causal, stage_report, stage_separability, stage_steer,
                                       stage_suppress, stage_where)
from interp.study.stages_data import stage_behavior, stage_cache
from interp.study.stages_null import stage_null, stage_null_train

log = logging.getLogger(__name__)


def _rel(ctx: StageContext, path: Path) -> str:
    return relative(ctx.out, path)


def stage_train(ctx: StageContext) -> dict[str, Any]:
    from training.qlora import train_or_resume

    c: StudyConfig = ctx.config
    out = ctx.path("adapter")
    config = c.train_config()
    result = train_or_resume(config, out)
    return {"outputs": [_rel(ctx, out / name) for name in ("adapter_config.json", "adapter_model.safetensors",
                                                           "training.json")],
            "steps": result.steps_done, "final_loss": result.loss_history[-1], "train_seconds": round(result.seconds, 1),
            "data_hash": result.data_hash, "base_fingerprint": result.base_fingerprint,
            "config": dataclasses.asdict(config)}


def stage_merge(ctx: StageContext) -> dict[str, Any]:
    from training.merge import merge_adapter

    out = ctx.path("merged")
    result = merge_adapter(ctx.path("adapter"), out, overwrite=True)
    return {"outputs": [_rel(ctx, out)], "base_spec": result.base_spec,
            "base_fingerprint": result.base_fingerprint, "merged_fingerprint": result.merged_fingerprint}


def stage_diff(ctx: StageContext) -> dict[str, Any]:
    from interp.stats.diff import DiffConfig, diff_caches
    from activations.behaviors import Behavior
    from interp.stats.designs import reading_design

    c: StudyConfig = ctx.config
    behavior = Behavior.parse(c.target_behavior)
    has_writing = "writing" in ctx.results["cache"]["reductions"]  # the cache stage decides (stage_cache)
    design = reading_design(behavior.condition, writing=has_writing, noun=behavior.noun)
    result = diff_caches(ctx.path("caches", "base"), ctx.path("caches", "merged"), design,
                  DiffConfig(delta=c.delta, split_seed=c.seed))
    out = ctx.path("neurons.csv")
    result.save(out, overwrite=True)
    return {"outputs": [_rel(ctx, out), _rel(ctx, out.with_suffix(".json"))], "counts": result.counts(),
            "placebo": result.placebo()}


def stage_examples(ctx: StageContext) -> dict[str, Any]:
    import pandas as pd

    from activations.behaviors import Behavior
    from interp.report.examples import max_activating_examples

    table = pd.read_csv(ctx.path("neurons.csv"))
    top = table[table["flagged"]].sort_values("rank").head(5)
    neurons = [(int(r.layer), int(r.index)) for r in top.itertuples()]
    merged = load_model(str(ctx.path("merged")))
    condition = Behavior.parse(ctx.config.target_behavior).condition
    examples = max_activating_examples(merged.model, merged.tokenizer, neurons,
                                       ctx.path("caches", "merged", f"{condition}.h5"))
    out = ctx.path("examples.json")
    write_json_atomic(out, examples)
    return {"outputs": [_rel(ctx, out)]}


def _data_inputs(config: StudyConfig) -> list[Path]:
    from training.data import default_data_path

    return [Path(config.data).expanduser() if config.data else default_data_path()]


def _prompt_inputs(config: StudyConfig) -> list[Path]:
    from importlib import resources

    return [Path(str(resources.files("activations") / "prompts" / f"{name}.jsonl")) for name in ("emoji", "neutral")]


def _separability_inputs(config: StudyConfig) -> list[Path]:
    from training.inventory import default_inventory_path
    from training.trait_classifier import VOICE_CORPUS

    return [*_data_inputs(config), *_prompt_inputs(config), default_inventory_path(), VOICE_CORPUS]


def _verdict_inputs(config: StudyConfig) -> list[Path]:
    from interp.causal.capability import builtin_capability_path
    from training.behavior import FRESH_QUESTIONS

    return [*_data_inputs(config), *_prompt_inputs(config), builtin_capability_path(), FRESH_QUESTIONS]


CAUSAL_READS = ("seed", "study", "data", "behavior", "setup")
STAGES: tuple[Stage, ...] = (
    Stage("train", stage_train, (), ("study", "trait", "data", "model", "seed", "train_steps", "learning_rate",
                                     "quantize", "precision"),
          _data_inputs),
    Stage("merge", stage_merge, ("train",)),
    Stage("behavior", stage_behavior, ("merge",), ("trait", "study", "data", "behavior", "seed", "setup",
                                                  "behavior_samples", "base_samples",
                                                  "behavior_questions", "behavior_neutral", "max_new_tokens",
                                                  "writing_questions", "writing_samples", "precision"), _data_inputs,
          version=4),
    Stage("cache", stage_cache, ("merge", "behavior"), ("study", "data", "behavior", "reading_prompts", "capture_batch", "seed"),
          _prompt_inputs,
          version=4),
    Stage("diff", stage_diff, ("cache",), ("study", "behavior", "delta", "seed"), version=4),
    Stage("null_train", stage_null_train, (), ("study", "trait", "data", "model", "seed", "train_steps",
                                               "learning_rate", "quantize", "precision", "null_study"), _data_inputs),
    Stage("null", stage_null, ("cache", "null_train"), ("study", "null_study", "behavior", "reading_prompts",
                                                        "capture_batch", "delta", "seed"), _prompt_inputs),
    Stage("examples", stage_examples, ("diff", "merge"), ("study", "behavior"), version=3),
    Stage("causal", stage_causal, ("diff", "merge", "behavior"),
          (*CAUSAL_READS, "screen", "sweep"), _prompt_inputs, version=3),
    Stage("suppress", stage_suppress, ("causal", "merge", "behavior"),
          (*CAUSAL_READS, "export_method", "compare_export", "compare_samples", "fresh_samples", "behavior_samples",
           "behavior_questions", "behavior_neutral", "max_new_tokens", "precision"),
          _verdict_inputs, version=5),
    Stage("separability", stage_separability, ("causal", "suppress", "merge", "behavior", "diff"),
          (*CAUSAL_READS, "trait", "separability_samples", "behavior_questions", "max_new_tokens", "precision"),
          _separability_inputs,
          version=5),
    Stage("where", stage_where, ("causal", "merge", "behavior", "diff"), (*CAUSAL_READS, "where"), _prompt_inputs,
          version=2),
    Stage("steer", stage_steer, ("causal", "merge", "behavior", "diff"),
          (*CAUSAL_READS, "steer", "trait", "behavior_questions", "max_new_tokens", "precision"), _data_inputs),
    Stage("baselines", stage_baselines, ("causal", "merge", "behavior", "diff"), (*CAUSAL_READS, "baselines"),
          _prompt_inputs),
    Stage("report", stage_report, ("train", "merge", "behavior", "cache", "diff", "null_train", "null", "examples",
                                   "causal", "suppress", "separability", "where", "steer", "baselines"),
          ("quick", "study", "behavior"), version=9),
)


def run_study(config: StudyConfig, out: str | Path, *, force: tuple[str, ...] = (),
              until: str | None = None) -> dict[str, dict[str, Any]]:
    """Run (or resume) the whole study into ``out``; fresh stages are skipped (``interp.stages``)."""
    from interp.causal.experiment import shared_held_out

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "study.json"
    if config_path.exists():
        previous = json.loads(config_path.read_text())
        if previous != json.loads(json.dumps(dataclasses.asdict(config))):
            log.info("study settings differ from the last run in %s; stages they affect will rerun", out)
    write_json_atomic(config_path, dataclasses.asdict(config))
    with shared_held_out():  # where, steer and baselines prepare the same models and controls once
        return run_stages(STAGES, out, config, force=force, until=until, published=("report",))



def read_study_config(out: str | Path) -> StudyConfig:
    """The settings a study directory was last run with (its ``study.json``)."""
    return config_from_json(Path(out) / "study.json", StudyConfig,
                            f"{out} holds no study; run `interp run --out {out}` first")


def rebuild_report(out: str | Path) -> list[Path]:
    """Write the report again from the stage outputs, without recomputing; refused if any stage it
    reports is stale (a setting, an input file or an upstream output changed since it ran)."""
    out = Path(out)
    config = read_study_config(out)
    stale = stale_stages([s for s in STAGES if s.name != "report"], out, config)
    if stale:
        listed = ", ".join(f"{name} ({why})" for name, why in stale.items())
        raise ValueError(f"{out}: stages {listed} are not fresh, so a report would mix old and new results; "
                         f"run `interp run --out {out}` with the study's settings to redo them")
    record = run_stages(STAGES, out, config, force=("report",), published=("report",))["report"]
    return [out / rel for rel in record["outputs"]]
