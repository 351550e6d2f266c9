"""The study's causal stages: screen and sweep (one stage: they share their prepared inputs), the
exported suppressor and its verdict, and the report. Each only wires files to
``interp.causal.experiment``, the functions ``interp ablate`` and ``interp suppress`` call too."""

from __future__ import annotations

import dataclasses

import json
import logging
from typing import Any

from activations.atomic_io import read_jsonl, write_json_atomic, write_jsonl_atomic
from activations.sampling import SampledReply
from interp.study.config import StudyConfig
from interp.stages import StageContext, relative
from interp.study.stages_data import behavior_config

log = logging.getLogger(__name__)


def causal_setup(c: StudyConfig):
    """The study's causal setup, seeded by the study."""
    return dataclasses.replace(c.setup, seed=c.seed)


def screen_config(c: StudyConfig):
    return dataclasses.replace(c.screen, seed=c.seed)


def sweep_config(c: StudyConfig):
    return dataclasses.replace(c.sweep, seed=c.seed)


def stage_causal(ctx: StageContext) -> dict[str, Any]:
    """Screen every neuron (necessity direction), then sweep the rankings against matched random sets."""
    from interp.causal.experiment import run_causal

    c: StudyConfig = ctx.config
    result = run_causal(str(ctx.path("merged")), c.model, ctx.path("neurons.csv"), ctx.path("behavior", "writing.jsonl"),
                        c.target_behavior, causal_setup(c), screen_config(c), sweep_config(c))
    screen_path = result.screen.save(ctx.path("causal", "screen.json"), overwrite=True)
    sweep_path = result.sweep.save(ctx.path("causal", "sweep.json"), overwrite=True)
    return {"outputs": [relative(ctx.out, p) for p in (screen_path, screen_path.with_suffix(".csv"), sweep_path)],
            "behavior": c.target_behavior, "check": result.screen.to_dict()["check"], "choice": result.sweep.choice,
            "random_beaten": result.sweep.random_beaten, "seconds": result.seconds}


def stage_suppress(ctx: StageContext) -> dict[str, Any]:
    """Export the chosen suppressor, reload it with transformers alone and measure the verdict."""
    from interp.causal.experiment import suppress_and_judge

    c: StudyConfig = ctx.config
    sweep = json.loads(ctx.path("causal", "sweep.json").read_text())
    merged_replies = read_jsonl(ctx.path("behavior", "merged.generations.jsonl"))
    outputs, verdicts = [], {}
    fresh_group, fresh = None, []
    if c.fresh_samples:
        from activations import load_model
        from interp.causal.experiment import sample_group
        from training.behavior import fresh_prompts

        fresh_group = fresh_prompts()
        merged = load_model(str(ctx.path("merged")))
        fresh = sample_group(merged.model, merged.tokenizer, fresh_group, behavior_config(c, c.fresh_samples),
                             c.fresh_samples, "merged model: fresh questions")
        del merged
        fresh_path = ctx.path("suppression", "fresh-merged.jsonl")
        write_jsonl_atomic(fresh_path, ({"key": r.key, "sample": r.sample, "text": r.text} for r in fresh))
        outputs.append(fresh_path)
    for method in dict.fromkeys((c.export_method, *c.compare_export)):  # the verdict's method first
        suffix = "" if method == c.export_method else f"-{method}"
        # the sweep's random sets were measured under the verdict's intervention only
        selection = sweep if not suffix else {key: value for key, value in sweep.items() if key != "random_beaten"}
        samples = c.behavior_samples if not suffix else min(c.compare_samples, c.behavior_samples)
        verdict, replies, check = suppress_and_judge(
            str(ctx.path("merged")), c.model, selection, merged_replies, ctx.path(f"suppressed{suffix}"),
            c.target_behavior, behavior_config(c, samples), causal_setup(c), method=method, overwrite=True,
            intactness=not suffix, fresh=fresh if not suffix else (), fresh_group=fresh_group)
        verdict_path = ctx.path("suppression", f"verdict{suffix}.json")
        write_json_atomic(verdict_path, {**verdict.to_dict(), "export_check": check})
        replies_path = ctx.path("suppression", f"replies{suffix}.jsonl")
        write_jsonl_atomic(replies_path, ({"key": r.key, "sample": r.sample, "text": r.text} for r in replies))
        outputs += [ctx.path(f"suppressed{suffix}"), verdict_path, replies_path]
        verdicts[method] = verdict
    verdict = verdicts.pop(c.export_method)
    return {"outputs": [relative(ctx.out, p) for p in outputs], "sentence": verdict.sentence(),
            "passed": verdict.passed, "checks": verdict.checks(),
            "compared": {method: other.sentence() for method, other in verdicts.items()}}


def stage_separability(ctx: StageContext) -> dict[str, Any]:
    """Behaviour vs personality: trait score and the behaviour's rate of base, merged, merged-suppressed and
    random-suppressed models (``interp.causal.separability``)."""
    from activations.behaviors import Behavior
    from interp.causal.experiment import replies_from_records
    from interp.causal.separability import separability
    from training.behavior import behavior_prompts

    c: StudyConfig = ctx.config
    sweep = json.loads(ctx.path("causal", "sweep.json").read_text())
    config = behavior_config(c, c.behavior_samples)
    heldout = behavior_prompts(config)[0].name
    replies = {name: replies_from_records(read_jsonl(ctx.path("behavior", f"{name}.generations.jsonl")), heldout)
               for name in ("base", "merged")}
    replies["merged-suppressed"] = [SampledReply(r["key"], int(r["sample"]), (), r["text"])
                                    for r in read_jsonl(ctx.path("suppression", "replies.jsonl"))]
    result = separability(str(ctx.path("merged")), c.model, ctx.path("suppressed"), ctx.path("neurons.csv"), sweep,
                          replies, Behavior.parse(c.target_behavior), config, causal_setup(c), samples=c.separability_samples)
    path = ctx.path("separability.json")
    write_json_atomic(path, result.to_dict())
    return {"outputs": [relative(ctx.out, path)], "sentence": result.sentence()}


def stage_where(ctx: StageContext) -> dict[str, Any]:
    """Where the fine-tune's change lives: the sweep's sets and the bounds patched in both directions
    (``interp.causal.where``), on the writing contexts the sweep did not choose on."""
    return _unless_too_few(ctx, ctx.path("causal", "where.json"), _where)


def _where(ctx: StageContext) -> dict[str, Any]:
    from interp.causal.experiment import run_where
    from interp.interventions import NeuronSet

    c: StudyConfig = ctx.config
    chosen = NeuronSet.from_pairs(json.loads(ctx.path("causal", "sweep.json").read_text())["choice"]["neurons"])
    result = run_where(str(ctx.path("merged")), c.model, ctx.path("neurons.csv"), ctx.path("behavior", "writing.jsonl"),
                       ctx.path("causal", "screen.csv"), chosen, c.target_behavior, causal_setup(c),
                       dataclasses.replace(c.where, seed=c.seed))
    path = result.save(ctx.path("causal", "where.json"), overwrite=True)
    return {"outputs": [relative(ctx.out, path)], "sentence": result.sentence(), "seconds": round(result.seconds, 1)}


def stage_baselines(ctx: StageContext) -> dict[str, Any]:
    """The chosen set against baselines that could win, on contexts that did not choose it
    (``interp.causal.baselines``)."""
    return _unless_too_few(ctx, ctx.path("causal", "baselines.json"), _baselines)


def _baselines(ctx: StageContext) -> dict[str, Any]:
    from interp.causal.experiment import run_baselines
    from interp.interventions import NeuronSet

    c: StudyConfig = ctx.config
    chosen = NeuronSet.from_pairs(json.loads(ctx.path("causal", "sweep.json").read_text())["choice"]["neurons"])
    result = run_baselines(str(ctx.path("merged")), c.model, ctx.path("neurons.csv"),
                           ctx.path("behavior", "writing.jsonl"), ctx.path("causal", "screen.csv"), chosen,
                           c.target_behavior, causal_setup(c), dataclasses.replace(c.baselines, seed=c.seed))
    path = result.save(ctx.path("causal", "baselines.json"), overwrite=True)
    return {"outputs": [relative(ctx.out, path)], "sentence": result.sentence(), "seconds": round(result.seconds, 1)}


def stage_steer(ctx: StageContext) -> dict[str, Any]:
    """Sufficiency while sampling: the base steered by the chosen set's mean change, against matched random
    sets and the difference-of-means direction (``interp.causal.steer``)."""
    return _unless_too_few(ctx, ctx.path("causal", "steer.json"), _steer)


def _steer(ctx: StageContext) -> dict[str, Any]:
    from interp.causal.experiment import run_steer
    from interp.interventions import NeuronSet

    c: StudyConfig = ctx.config
    chosen = NeuronSet.from_pairs(json.loads(ctx.path("causal", "sweep.json").read_text())["choice"]["neurons"])
    result = run_steer(str(ctx.path("merged")), c.model, ctx.path("neurons.csv"), ctx.path("behavior", "writing.jsonl"),
                       chosen, c.target_behavior, behavior_config(c, 1),
                       read_jsonl(ctx.path("behavior", "merged.generations.jsonl")), causal_setup(c),
                       dataclasses.replace(c.steer, seed=c.seed))
    path = result.save(ctx.path("causal", "steer.json"), overwrite=True)
    return {"outputs": [relative(ctx.out, path)], "sentence": result.sentence(), "seconds": round(result.seconds, 1)}


def _unless_too_few(ctx: StageContext, path, run) -> dict[str, Any]:
    """Run a stage that scores on held-out writing contexts; when fewer than two are left (a behaviour that shows at
    the start of nearly every reply leaves few contexts), record why instead of stopping the study, so the
    verdict and the report still come (and an earlier run's output is never reported)."""
    from interp.causal.where import TooFewContexts

    try:
        return run(ctx)
    except TooFewContexts as error:
        path.unlink(missing_ok=True)
        log.warning("%s skipped: %s", path.name, error)
        return {"outputs": [], "skipped": str(error)}


def stage_report(ctx: StageContext) -> dict[str, Any]:
    from interp.pages import build_pages
    from interp.report.build import build_report

    try:  # first, so the report's tables can link to them
        pages = build_pages(ctx.out, link_report=True)
    except Exception as error:  # the pages are a view of finished results: a failure there must not cost the report
        log.error("neuron pages failed (%s); the report is written without links; retry with `interp pages %s`",
                  error, ctx.out)
        pages = None
    paths = build_report(ctx.out)
    if pages is None:
        return {"outputs": [relative(ctx.out, p) for p in paths], "pages_error": True}
    return {"outputs": [relative(ctx.out, p) for p in [*paths, pages.index]], "pages": pages.n_pages,
            "pages_mb": round(pages.bytes / 1e6, 2), "pages_seconds": round(pages.seconds, 1)}
