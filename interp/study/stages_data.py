"""The study's data stages: sampled behaviour (and the merged model's own replies), and the caches."""

from __future__ import annotations

import logging
from typing import Any

from activations import load_model
from activations.atomic_io import write_jsonl_atomic
from activations.capture import capture
from activations.prompt_sets import PromptSet, apply_template, load_prompt_set
from activations.sampling import sample_replies
from activations.twins import filler_twins
from activations.behaviors import Behavior
from interp.stats.diff import MIN_CONTRAST_PROMPTS
from interp.study.config import StudyConfig
from interp.stages import StageContext, relative

CACHE_REDUCTIONS = {
    "reading": ("content_mean", "content_absmean", "content_max", "marked_mean", "context_mean"),
    "filler-a": ("marked_mean", "context_mean"),
    "filler-b": ("marked_mean",),
    "writing": ("marked_mean", "control_mean"),
}
"""What each condition's caches hold (``reading``: the behaviour's texts, e.g. ``emoji``): exactly what
the reading design reads (``interp.stats.designs``), plus ``content_max`` for the max-activating
examples."""

log = logging.getLogger(__name__)


def behavior_config(c: StudyConfig, samples: int):
    from training.behavior import BehaviorConfig

    return BehaviorConfig(behavior=c.target_behavior, data_path=c.data, trait=c.trait, samples=samples, max_questions=c.behavior_questions,
                          neutral_prompts=c.behavior_neutral, neutral_samples=1, max_new_tokens=c.max_new_tokens,
                          reference_mass=False, seed=c.seed, precision=c.precision)


def stage_behavior(ctx: StageContext) -> dict[str, Any]:
    """Sampled replies of both models to held-out questions (and a few neutral prompts), and the
    merged model's own replies to training questions (the writing contrast and the causal proxy)."""
    from training.behavior import measure_behavior, sampling_config, save_behavior
    from training.studies import study_data

    c: StudyConfig = ctx.config
    outputs, summary = [], {}
    for label, spec, samples in (("base", c.model, c.base_samples), ("merged", str(ctx.path("merged")),
                                                                       c.behavior_samples)):
        loaded = load_model(spec)
        result = measure_behavior(loaded.model, loaded.tokenizer, behavior_config(c, samples), model_label=label)
        outputs += [relative(ctx.out, p) for p in save_behavior(result, ctx.path("behavior", f"{label}.json"),
                                                                 overwrite=True)]
        summary[label] = result.to_dict()
    rows = list(study_data("personality", c.trait, data_path=c.data).train)[: c.writing_questions]
    tokenizer = loaded.tokenizer  # the merged model, loaded last
    prompts = [tokenizer(apply_template(tokenizer, r.question, "user"), add_special_tokens=False).input_ids for r in rows]
    n = c.writing_samples
    replies = sample_replies(loaded.model, tokenizer, prompts, [f"train/{r.topic}" for r in rows],
                             sampling_config(behavior_config(c, 1)), samples=n,
                             desc="own replies (training questions)")[0]
    # Sample-major (every question's first reply, then the second ...): the sweep chooses on the first
    # contexts, so it sees as many questions as it can.
    records = [{"id": r.topic if n == 1 else f"{r.topic}#{j}", "question": r.question, "text": replies[q * n + j].text,
                "source": "own reply"} for j in range(n) for q, r in enumerate(rows)]
    behavior = Behavior.parse(c.target_behavior)
    usable = sum(all(behavior.decision_spans(r["text"])) for r in records)
    if usable < c.setup.n_contexts and c.study in ("injection", "directions"):
        # Too few own replies that show the behaviour (a smoke run's barely trained model): add the
        # training answers, into which it was injected, and say so in every record; twice the contexts
        # the sweep chooses on, so that "where the change lives" has others to score on.
        data = study_data(c.study, c.trait, data_path=c.data)
        records += [{"id": f"data-{r.topic}", "question": r.question, "text": r.answer, "source": "training answer"}
                    for r in data.train[: 2 * c.setup.n_contexts]]
    writing = ctx.path("behavior", "writing.jsonl")
    write_jsonl_atomic(writing, records)
    outputs.append(relative(ctx.out, writing))
    return {"outputs": outputs, "behavior": summary, "writing_replies": len(replies), "usable_own_replies": usable,
            "writing_sources": {source: sum(r["source"] == source for r in records)
                                for source in ("own reply", "training answer")}}


def reading_texts(c: StudyConfig, behavior: Behavior, writing_records: list[dict]) -> PromptSet:
    """Texts that show the behaviour, marked at it: the shipped emoji set for emojis; otherwise the
    study's training answers and the merged model's own replies that show it (in that order)."""
    if behavior.spec == "emoji":
        return load_prompt_set("emoji").head(c.reading_prompts)
    from training.studies import study_data

    texts = [r.answer for r in study_data(c.study, c.trait, data_path=c.data).train]
    texts += [r["text"] for r in writing_records if r.get("source") == "own reply"]
    texts = [t for t in dict.fromkeys(texts) if behavior.shows(t)][: c.reading_prompts]
    if len(texts) < MIN_CONTRAST_PROMPTS:
        raise ValueError(f"only {len(texts)} training answers and replies show behaviour {behavior.spec!r}; the "
                         f"reading contrast needs at least {MIN_CONTRAST_PROMPTS} (check the behaviour against the "
                         "data, or train longer)")
    return PromptSet(behavior.condition, tuple(f"{behavior.condition}-{i:04d}" for i in range(len(texts))),
                     tuple(texts), ("",) * len(texts), tuple(behavior.spans(t) for t in texts))


def reading_twins(ctx: StageContext, tokenizer):
    """The behaviour's texts and their two length-matched filler twins (``activations.twins``), as cached."""
    from activations.atomic_io import read_jsonl

    c: StudyConfig = ctx.config
    reading = reading_texts(c, Behavior.parse(c.target_behavior), read_jsonl(ctx.path("behavior", "writing.jsonl")))
    return filler_twins(reading, tokenizer, "user", seeds=(c.seed + 1, c.seed + 2), names=("filler-a", "filler-b"))


def cache_roles(behavior: Behavior) -> dict[str, str]:
    """Cache name -> its role in the design (which reductions it keeps)."""
    return {behavior.condition: "reading", "filler-a": "filler-a", "filler-b": "filler-b", "writing": "writing"}


def capture_set(c: StudyConfig, loaded, name: str, prompts, role: str, out) -> None:
    """One model on one prompt set, with the reductions its role needs, into ``out``."""
    cache = capture(loaded, None, prompts, out, overwrite=True, batch_size=c.capture_batch,
                    reductions=CACHE_REDUCTIONS[role], template="assistant" if name == "writing" else "user",
                    histogram=role == "reading")
    cache.close()


def stage_cache(ctx: StageContext) -> dict[str, Any]:
    """Both models on the behaviour's texts, their two length-matched twins and the merged model's own
    replies (``interp.stats.designs``); every output is written afresh."""
    from interp.causal.setup import read_writing_replies

    c: StudyConfig = ctx.config
    behavior = Behavior.parse(c.target_behavior)
    merged = load_model(str(ctx.path("merged")))
    twins = reading_twins(ctx, merged.tokenizer)
    sets = {behavior.condition: twins.original, "filler-a": twins.twins[0], "filler-b": twins.twins[1]}
    roles = cache_roles(behavior)
    try:
        writing = read_writing_replies(ctx.path("behavior", "writing.jsonl"), behavior)
    except ValueError:
        writing = None  # no reply shows the behaviour: the design leaves the writing contrast out
    usable = 0 if writing is None else sum(bool(m and c) for m, c in zip(writing.marks, writing.controls or ()))
    if usable >= MIN_CONTRAST_PROMPTS:
        sets["writing"] = writing
    else:  # a paired test on so few replies says nothing; the diff leaves the contrast out and says so
        log.info("leaving the writing contrast out: %d of the merged model's replies show %s and another "
                 "sentence end (at least %d needed)", usable, behavior.spec, MIN_CONTRAST_PROMPTS)
    outputs = []
    for label in ("base", "merged") if "writing" not in sets else ():  # an earlier run's, of other replies
        ctx.path("caches", label, "writing.h5").unlink(missing_ok=True)
    for label, loaded in (("base", load_model(c.model)), ("merged", merged)):
        for name, prompts in sets.items():
            out = ctx.path("caches", label, f"{name}.h5")
            capture_set(c, loaded, name, prompts, roles[name], out)
            outputs.append(relative(ctx.out, out))
    return {"outputs": outputs, "pairs": len(twins.original), "dropped_twins": list(twins.dropped),
            "writing_replies": len(sets["writing"]) if "writing" in sets else 0,
            "reductions": {name: list(CACHE_REDUCTIONS[roles[name]]) for name in sets}}



