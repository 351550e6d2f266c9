"""The default study, stage by stage: fine-tune -> merge -> behaviour -> caches -> neuron statistics
-> ablation dose-response -> patching -> attribution -> report.

Every stage reads the outputs of earlier ones from the study directory and writes its own there,
so ``interp report DIR`` can rebuild the report from files alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from activations import load_model
from activations.capture import capture
from activations.prompt_sets import PromptSet, load_prompt_set
from interp.causal.results import write_json
from interp.study.config import StudyConfig
from interp.study.stages import Stage, StageContext, run_stages

log = logging.getLogger(__name__)

SETS = ("emoji", "emoji-free", "neutral")


def _rel(ctx: StageContext, path: Path) -> str:
    return str(Path(path).resolve().relative_to(ctx.out.resolve()))


def stage_train(ctx: StageContext) -> dict[str, Any]:
    from training.config import TrainConfig
    from training.qlora import train

    c: StudyConfig = ctx.config
    out = ctx.path("adapter")
    if (out / "adapter_config.json").exists() and (out / "training.json").exists():
        log.info("adapter in %s is finished; reusing it", out)
        return {"outputs": [_rel(ctx, out)], "reused": True}
    config = TrainConfig(study=c.study, trait=c.trait, model=c.model, steps=c.train_steps,
                         learning_rate=c.learning_rate, seed=c.seed)
    result = train(config, out, resume=True)
    return {"outputs": [_rel(ctx, out)], "steps": result.steps_done, "final_loss": result.loss_history[-1],
            "train_seconds": round(result.seconds, 1), "data_hash": result.data_hash,
            "base_fingerprint": result.base_fingerprint, "config": dataclasses.asdict(config)}


def stage_merge(ctx: StageContext) -> dict[str, Any]:
    from training.merge import merge_adapter

    out = ctx.path("merged")
    result = merge_adapter(ctx.path("adapter"), out, overwrite=True)
    return {"outputs": [_rel(ctx, out)], "base_spec": result.base_spec,
            "base_fingerprint": result.base_fingerprint, "merged_fingerprint": result.merged_fingerprint}


def _models(ctx: StageContext) -> dict[str, str]:
    return {"base": ctx.config.model, "merged": str(ctx.path("merged"))}


def stage_behavior(ctx: StageContext) -> dict[str, Any]:
    from training.behavior import BehaviorConfig, measure_behavior, save_behavior

    c: StudyConfig = ctx.config
    config = BehaviorConfig(trait=c.trait, samples=c.behavior_samples, neutral_prompts=c.behavior_neutral,
                            max_new_tokens=c.max_new_tokens, seed=c.seed)
    outputs, summary = [], {}
    for label, spec in _models(ctx).items():
        loaded = load_model(spec)
        result = measure_behavior(loaded.model, loaded.tokenizer, config, model_label=label)
        paths = save_behavior(result, ctx.path("behavior", f"{label}.json"), overwrite=True)
        outputs += [_rel(ctx, p) for p in paths]
        summary[label] = result.to_dict()
    return {"outputs": outputs, "behavior": summary}


def _prompt_set(name: str, limit: int | None) -> PromptSet:
    prompts = load_prompt_set(name)
    if limit is None or limit >= len(prompts.ids):
        return prompts
    return dataclasses.replace(prompts, ids=prompts.ids[:limit], texts=prompts.texts[:limit],
                               categories=prompts.categories[:limit])


def stage_cache(ctx: StageContext) -> dict[str, Any]:
    c: StudyConfig = ctx.config
    limits = {"emoji": c.emoji_prompts, "emoji-free": c.emoji_prompts, "neutral": c.neutral_prompts}
    outputs = []
    for label, spec in _models(ctx).items():
        loaded = load_model(spec)
        for name in SETS:
            out = ctx.path("caches", label, f"{name}.h5")
            if out.exists():  # no stage record vouches for it: a killed run may have left it
                out.unlink()
            cache = capture(loaded, None, _prompt_set(name, limits[name]), out, batch_size=c.capture_batch,
                            model_spec=spec)
            cache.close()
            outputs.append(_rel(ctx, out))
    return {"outputs": outputs}


def stage_diff(ctx: StageContext) -> dict[str, Any]:
    from interp.stats.diff import diff

    result = diff(ctx.path("caches", "base"), ctx.path("caches", "merged"))
    out = ctx.path("neurons.csv")
    result.save(out, overwrite=True)
    return {"outputs": [_rel(ctx, out), _rel(ctx, out.with_suffix(".json"))], "summary": result.summary()}


def stage_examples(ctx: StageContext) -> dict[str, Any]:
    import pandas as pd

    from interp.report.examples import max_activating_examples

    table = pd.read_csv(ctx.path("neurons.csv"))
    neurons = [(int(r.layer), int(r.index)) for r in table.head(5).itertuples()]
    merged = load_model(str(ctx.path("merged")))
    examples = max_activating_examples(merged.model, merged.tokenizer, neurons,
                                       ctx.path("caches", "merged", "emoji.h5"))
    out = ctx.path("examples.json")
    write_json(out, examples, overwrite=True)
    return {"outputs": [_rel(ctx, out)]}


def _suite(ctx: StageContext, tokenizer):
    from interp.causal.generation import GenerationConfig
    from interp.causal.inputs import load_neutral, load_questions
    from interp.causal.suite import emoji_suite

    c: StudyConfig = ctx.config
    questions = load_questions(trait=c.trait)
    _, neutral = load_neutral(limit=c.side_effect_prompts)
    # 16 prompts per generate call: stacked dose-response copies then share one call (see ablate_stacked)
    generation = GenerationConfig(max_new_tokens=c.max_new_tokens, batch_size=16, seed=c.seed)
    return emoji_suite(tokenizer, questions, neutral, generation=generation)


def _ranked(ctx: StageContext):
    import pandas as pd

    from interp.interventions.neuron_set import ranked_neurons

    return ranked_neurons(pd.read_csv(ctx.path("neurons.csv")))


def stage_ablate(ctx: StageContext) -> dict[str, Any]:
    from interp.causal.dose_response import DoseResponseConfig, dose_response
    from interp.causal.suite import ablation_reference
    from interp.interventions.neuron_set import NeuronSet

    c: StudyConfig = ctx.config
    ranked = _ranked(ctx)
    if not ranked:
        return {"outputs": [], "skipped": "no neuron was flagged, so there is nothing to ablate"}
    merged = load_model(str(ctx.path("merged")))
    suite = _suite(ctx, merged.tokenizer)
    reference = ablation_reference(merged.model, merged.tokenizer, c.ablation_mode,
                                   load_prompt_set("neutral").texts[:32],
                                   cache=ctx.path("caches", "merged", "neutral.h5"), seed=c.seed)
    config = DoseResponseConfig(k_grid=c.k_grid, mode=c.ablation_mode, n_random=c.n_random, seed=c.seed)
    # Random sets avoid the neurons the largest k ablates, not every flagged one: on a small model
    # the flagged set can fill whole layers and leave nothing to draw matched sets from.
    exclude = NeuronSet.from_pairs(ranked[: max(config.ks(len(ranked)))])
    result = dose_response(merged.model, merged.tokenizer, ranked, suite, config, reference=reference,
                           exclude=exclude, model_name="merged")
    path = result.save(ctx.path("ablation"), overwrite=True)
    return {"outputs": [_rel(ctx, path)]}


def stage_patch(ctx: StageContext) -> dict[str, Any]:
    from interp.causal.patching import PatchingConfig, patching_experiment

    c: StudyConfig = ctx.config
    ranked = _ranked(ctx)
    if not ranked:
        return {"outputs": [], "skipped": "no neuron was flagged, so there is nothing to patch"}
    base, merged = load_model(c.model), load_model(str(ctx.path("merged")))
    suite = _suite(ctx, merged.tokenizer)
    result = patching_experiment(base.model, merged.model, merged.tokenizer, ranked, suite,
                                 PatchingConfig(k_grid=c.patch_k, seed=c.seed), names=("base", "merged"))
    path = result.save(ctx.path("patching"), overwrite=True)
    return {"outputs": [_rel(ctx, path)]}


def stage_attribute(ctx: StageContext) -> dict[str, Any]:
    from interp.causal.attribution import AttributionConfig, attribution_patching
    from interp.causal.metrics import emoji_mass_metric, emoji_token_ids

    c: StudyConfig = ctx.config
    base, merged = load_model(c.model), load_model(str(ctx.path("merged")))
    suite = _suite(ctx, merged.tokenizer)
    metric = emoji_mass_metric(emoji_token_ids(merged.tokenizer))
    result = attribution_patching(base.model, suite.questions, metric,
                                  AttributionConfig(n_check=c.attribution_check), donor=merged.model,
                                  models={"receiver": "base", "donor": "merged"}, suite=suite.describe())
    path = result.save(ctx.path("attribution", "attribution.json"), overwrite=True)
    return {"outputs": [_rel(ctx, path)]}


def stage_report(ctx: StageContext) -> dict[str, Any]:
    from interp.report.build import build_report

    paths = build_report(ctx.out)
    return {"outputs": [_rel(ctx, p) for p in paths]}


STAGES: tuple[Stage, ...] = (
    Stage("train", stage_train, (), ("study", "trait", "model", "seed", "train_steps", "learning_rate")),
    Stage("merge", stage_merge, ("train",)),
    Stage("behavior", stage_behavior, ("merge",), ("trait", "seed", "behavior_samples", "behavior_neutral",
                                                    "max_new_tokens")),
    Stage("cache", stage_cache, ("merge",), ("emoji_prompts", "neutral_prompts", "capture_batch")),
    Stage("diff", stage_diff, ("cache",)),
    Stage("examples", stage_examples, ("diff",)),
    Stage("ablate", stage_ablate, ("diff",), ("k_grid", "n_random", "ablation_mode", "seed", "max_new_tokens",
                                             "side_effect_prompts")),
    Stage("patch", stage_patch, ("diff",), ("patch_k", "seed", "max_new_tokens", "side_effect_prompts")),
    Stage("attribute", stage_attribute, ("merge",), ("attribution_check",)),
    Stage("report", stage_report, ("behavior", "diff", "examples", "ablate", "patch", "attribute"), ("quick",)),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


def run_study(config: StudyConfig, out: str | Path, *, force: tuple[str, ...] = (),
              until: str | None = None) -> dict[str, dict[str, Any]]:
    """Run (or resume) the whole study into ``out``; finished stages are skipped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "study.json"
    if config_path.exists():
        previous = json.loads(config_path.read_text())
        if previous != json.loads(json.dumps(dataclasses.asdict(config))):
            log.info("study settings differ from the last run in %s; stages they affect will rerun", out)
    write_json(config_path, dataclasses.asdict(config), overwrite=True)
    if "train" in force:
        shutil.rmtree(out / "adapter", ignore_errors=True)
    return run_stages(STAGES, out, config, force=force, until=until)
