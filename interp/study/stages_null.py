"""The study's null stages: a fine-tune that learned no behaviour, diffed with the study's design.

``null_train`` trains ``null_study`` (the personality fine-tune of the same trait, by default) with the
study's own settings and merges it; ``null`` caches it on the very texts and twins the study cached
and runs ``interp.stats.null.compare_to_null``. Two stages, so a changed cache or setting of the
diff does not retrain. Everything lands in ``null/``; the comparison is ``null/comparison.json``."""

from __future__ import annotations

import logging
from typing import Any

from activations import load_model
from activations.atomic_io import write_json_atomic
from activations.behaviors import Behavior
from interp.stages import StageContext, relative
from interp.study.config import StudyConfig
from interp.study.stages_data import cache_roles, capture_set, reading_twins

log = logging.getLogger(__name__)


def _skipped(c: StudyConfig) -> str | None:
    if c.null_study is None:
        return "no null study set"
    return f"the study is {c.study} itself" if c.null_study == c.study else None


def stage_null_train(ctx: StageContext) -> dict[str, Any]:
    """Train and merge the null fine-tune."""
    from training.merge import merge_adapter
    from training.qlora import train_or_resume

    c: StudyConfig = ctx.config
    if reason := _skipped(c):
        log.info("null fine-tune skipped: %s", reason)
        return {"outputs": [], "skipped": reason}
    trained = train_or_resume(c.train_config(c.null_study), ctx.path("null", "adapter"))
    merge_adapter(ctx.path("null", "adapter"), ctx.path("null", "merged"), overwrite=True)
    return {"outputs": [relative(ctx.out, ctx.path("null", "merged"))], "final_loss": trained.loss_history[-1],
            "train_seconds": round(trained.seconds, 1)}


def stage_null(ctx: StageContext) -> dict[str, Any]:
    """The null fine-tune's caches and the three diffs of ``interp.stats.null``."""
    from interp.stats.config import DiffConfig
    from interp.stats.designs import reading_design
    from interp.stats.null import compare_to_null

    c: StudyConfig = ctx.config
    if reason := _skipped(c):
        ctx.path("null", "comparison.json").unlink(missing_ok=True)  # an earlier run's must not be reported
        return {"outputs": [], "skipped": reason}
    null = load_model(str(ctx.path("null", "merged")))
    behavior = Behavior.parse(c.target_behavior)
    twins = reading_twins(ctx, null.tokenizer)
    sets = {behavior.condition: twins.original, "filler-a": twins.twins[0], "filler-b": twins.twins[1]}
    roles = cache_roles(behavior)
    for name, prompts in sets.items():
        capture_set(c, null, name, prompts, roles[name], ctx.path("null", "caches", f"{name}.h5"))
    del null
    tuned = {name: ctx.path("caches", "merged", f"{name}.h5") for name in sets}
    base = {name: ctx.path("caches", "base", f"{name}.h5") for name in sets}
    comparison = compare_to_null(base, tuned, ctx.path("null", "caches"),
                                 reading_design(behavior.condition, writing=False, noun=behavior.noun),
                                 DiffConfig(delta=c.delta, split_seed=c.seed), null_label=f"{c.null_study}/{c.trait}")
    path = ctx.path("null", "comparison.json")
    write_json_atomic(path, comparison.to_dict())
    log.info("%s", comparison.sentence())
    return {"outputs": [relative(ctx.out, path)], "sentence": comparison.sentence()}
