"""The causal experiment end to end, from files: what ``interp run``, ``interp ablate`` and
``interp suppress`` all call, so the same settings give the same numbers everywhere.

``run_causal``: prepare the shared inputs (``interp.causal.setup``), screen every neuron in the
necessity direction (``interp.causal.screen``), then sweep the screen's selectivity ranking and the
diff's behaviour-specific ranking against matched random sets (``interp.causal.sweep``), all for one
``activations.behaviors.Behavior``.
``suppress_and_judge``: export the sweep's choice into a plain HF folder, reload it with
``transformers`` alone and measure the verdict (``interp.causal.suppression``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from activations import load_model
from activations.behaviors import Behavior
from activations.models import default_base
from activations.sampling import SampledReply, sample_replies
from interp.causal.baselines import BaselinesResult
from interp.causal.config import BaselinesConfig, SteerConfig
from interp.causal.screen import ScreenConfig, ScreenResult, screen
from interp.causal.setup import CausalSetup, causal_context, causal_controls, neutral_reference, read_writing_replies
from interp.causal.suppression import SuppressionVerdict, fresh_cut, side_effects, suppression_verdict
from interp.causal.sweep import SweepConfig, SweepResult, sweep
from interp.causal.where import WhereConfig, WhereResult, held_out_contexts, where_change_lives
from interp.interventions import Neuron, NeuronSet, export_suppressed
from interp.interventions.export import check_export
from interp.interventions.neuron_set import read_neuron_table

if TYPE_CHECKING:
    import pandas as pd

    from activations import LoadedModel
    from activations.prompt_sets import PromptSet
    from interp.causal.inputs import TokenBatch
    from interp.causal.setup import Controls

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CausalResult:
    screen: ScreenResult
    sweep: SweepResult
    seconds: dict[str, float]


def run_causal(merged_spec: str, base_spec: str | None, neurons_csv: str | Path, writing_jsonl: str | Path,
               behavior: Behavior | str, setup: CausalSetup = CausalSetup(), screen_config: ScreenConfig = ScreenConfig(),
               sweep_config: SweepConfig = SweepConfig()) -> CausalResult:
    """Screen and sweep (module docstring) from a merged model, its base, a ``neurons.csv`` and the
    merged model's own replies to training questions, for ``behavior`` (a ``Behavior`` or its spec).
    ``base_spec`` None takes the base the merged model records (``activations.models.default_base``)."""
    behavior = Behavior.parse(behavior)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    writing = read_writing_replies(writing_jsonl, behavior)  # a behaviour the replies never show fails here
    merged, base = load_model(merged_spec), load_model(base_spec or default_base(merged_spec))
    table = read_neuron_table(neurons_csv)
    context = causal_context(merged.model, base.model, merged.tokenizer, writing, table, behavior, setup)
    seconds["prepare"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    screened = screen(merged.model, context.suite, context.reference.means, screen_config, exclude=list(context.outliers))
    seconds["screen"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    rankings = {"selective": screened.ranking(), "specific": context.diff_ranking}
    rankings = {name: ranking for name, ranking in rankings.items() if ranking}
    swept = sweep(merged.model, context.suite, rankings, context.reference, context.decile, context.pool, sweep_config,
                  primary="selective")
    seconds["sweep"] = round(time.perf_counter() - started, 1)
    return CausalResult(screened, swept, seconds)


def estimate_rankings(screen_csv: str | Path) -> dict[str, list[Neuron]]:
    """The screen's two first-order rankings from its ``screen.csv``, strongest removal first:
    ``change`` (base-value patching estimate) and ``ablation`` (mean-ablation estimate)."""
    import pandas as pd

    table = pd.read_csv(screen_csv)
    return {name: [(int(r.layer), int(r.index)) for r in table.sort_values(column, kind="stable").itertuples()]
            for name, column in (("change", "patch_estimate"), ("ablation", "mean_estimate"))}


@dataclass
class HeldOut:
    """What the stages after the sweep share: both models, the diff's table and the controls, and the
    writing contexts, those the sweep chose on and all of them (``held_out`` gives the others)."""

    merged: LoadedModel
    base: LoadedModel
    table: pd.DataFrame
    controls: Controls
    writing: PromptSet
    choosing: TokenBatch
    every: TokenBatch

    def held_out(self, limit: int | None) -> TokenBatch:
        """Up to ``limit`` contexts (None: all) that answer none of the questions the sweep chose on: another
        reply to one of those questions is not held out from it."""
        chose, question = set(self.choosing.ids), self.writing.context_of
        asked = {question(i) for i, row_id in enumerate(self.writing.ids) if row_id in chose}
        used = [row_id for i, row_id in enumerate(self.writing.ids) if question(i) in asked]
        return held_out_contexts(self.every, used, limit)


_shared: dict[tuple, HeldOut] | None = None


@contextlib.contextmanager
def shared_held_out() -> Iterator[None]:
    """Within the block, ``held_out_setup`` prepares each distinct set of inputs once and hands the same
    ``HeldOut`` to every later call (the where, steer and baselines stages of one study load the same
    two models and controls); the block's end frees them. The key holds the files' contents and the
    model folders' modification times, so inputs rewritten inside the block are prepared again. The
    stages only hook the models inside context managers, so a shared one is never left edited."""
    global _shared
    outer, _shared = _shared, {}
    try:
        yield
    finally:
        _shared = outer


def _input_key(*specs: str | Path | None) -> tuple:
    """What identifies a model spec or file for ``shared_held_out``: its path with its content hash (a
    file) or its files' modification times (a folder); other specs (hub names) as given."""
    from interp.stages import content_hash

    key = []
    for spec in specs:
        path = Path(spec) if spec is not None else None
        if path is not None and path.is_file():
            key.append((str(path.resolve()), content_hash(path)))
        elif path is not None and path.is_dir():
            key.append((str(path.resolve()), tuple(sorted((p.name, p.stat().st_mtime_ns) for p in path.iterdir()))))
        else:
            key.append(spec)
    return tuple(key)


def held_out_setup(merged_spec: str, base_spec: str | None, neurons_csv: str | Path, writing_jsonl: str | Path,
                   behavior: Behavior, setup: CausalSetup) -> HeldOut:
    """Both models, the controls and the writing contexts (``HeldOut``); inside ``shared_held_out`` the
    same inputs are prepared once."""
    if _shared is None:
        return _prepare_held_out(merged_spec, base_spec, neurons_csv, writing_jsonl, behavior, setup)
    key = (*_input_key(merged_spec, base_spec, neurons_csv, writing_jsonl), behavior.spec, setup)
    if key not in _shared:
        _shared.clear()  # one study's inputs at a time: a model pair is the memory the block may hold
        _shared[key] = _prepare_held_out(merged_spec, base_spec, neurons_csv, writing_jsonl, behavior, setup)
    return _shared[key]


def _prepare_held_out(merged_spec: str, base_spec: str | None, neurons_csv: str | Path, writing_jsonl: str | Path,
                      behavior: Behavior, setup: CausalSetup) -> HeldOut:
    from interp.causal.inputs import writing_batch

    writing = read_writing_replies(writing_jsonl, behavior)
    merged, base = load_model(merged_spec), load_model(base_spec or default_base(merged_spec))
    table = read_neuron_table(neurons_csv)
    controls = causal_controls(merged.model, base.model, merged.tokenizer, table, setup)
    return HeldOut(merged, base, table, controls, writing, writing_batch(merged.tokenizer, writing, setup.n_contexts),
                   writing_batch(merged.tokenizer, writing))


def run_where(merged_spec: str, base_spec: str | None, neurons_csv: str | Path, writing_jsonl: str | Path,
              screen_csv: str | Path, chosen: NeuronSet, behavior: Behavior | str, setup: CausalSetup = CausalSetup(),
              config: WhereConfig = WhereConfig()) -> WhereResult:
    """Where the change lives (``interp.causal.where``) from the causal stage's files: the screen's
    rankings, the diff's, and ``chosen`` (the sweep's set), on the writing contexts the sweep did not use."""
    from interp.causal.inputs import chat_batch
    from interp.causal.metrics import target_ids_tensor

    behavior = Behavior.parse(behavior)
    h = held_out_setup(merged_spec, base_spec, neurons_csv, writing_jsonl, behavior, setup)
    merged, base, table, controls, tokenizer = h.merged, h.base, h.table, h.controls, h.merged.tokenizer
    contexts = h.held_out(config.n_contexts)
    targets = target_ids_tensor(behavior.target_token_ids(tokenizer, h.writing.texts))
    rankings = {**estimate_rankings(screen_csv), "specific": controls.diff_ranking}
    members = {name: table[f"is_{name}"].astype(bool) for name in config.classes if f"is_{name}" in table.columns}
    classes = {name: NeuronSet.from_pairs(zip(table.loc[rows, "layer"], table.loc[rows, "index"]))
               for name, rows in members.items()}
    return where_change_lives(merged.model, base.model, contexts, chat_batch(tokenizer, controls.neutral.proxy),
                              targets, {name: r for name, r in rankings.items() if r}, chosen, controls.decile,
                              controls.pool, config, classes=classes, batch_size=setup.batch_size)


def run_baselines(merged_spec: str, base_spec: str | None, neurons_csv: str | Path, writing_jsonl: str | Path,
                  screen_csv: str | Path, chosen: NeuronSet, behavior: Behavior | str,
                  setup: CausalSetup = CausalSetup(), config: BaselinesConfig = BaselinesConfig()) -> BaselinesResult:
    """The chosen set against baselines that could win (``interp.causal.baselines``), on the writing
    contexts the sweep did not use; the direction comes from the ones it did."""
    from interp.causal.baselines import compare_baselines
    from interp.causal.controls import control_pool
    from interp.causal.inputs import chat_batch
    from interp.causal.metrics import target_ids_tensor
    from interp.causal.steer import mean_difference

    behavior = Behavior.parse(behavior)
    h = held_out_setup(merged_spec, base_spec, neurons_csv, writing_jsonl, behavior, setup)
    merged, controls, tokenizer = h.merged, h.controls, h.merged.tokenizer
    residual = mean_difference(merged.model, h.base.model, h.choosing, setup.batch_size).residual
    contexts = h.held_out(config.n_contexts)
    targets = target_ids_tensor(behavior.target_token_ids(tokenizer, h.writing.texts))
    outliers = set(controls.outliers)
    ranking = [n for n in estimate_rankings(screen_csv)["ablation"] if n not in outliers]
    pool = control_pool(controls.pool.shape, outliers=controls.outliers)  # unfiltered: flagged neurons too
    direction = {layer: residual[layer] for layer in chosen.layers}
    return compare_baselines(merged.model, contexts, chat_batch(tokenizer, controls.neutral.proxy[:2]), targets,
                             controls.reference.means, chosen, ranking, controls.decile, pool, direction, config,
                             batch_size=setup.batch_size)


def run_steer(merged_spec: str, base_spec: str | None, neurons_csv: str | Path, writing_jsonl: str | Path,
              chosen: NeuronSet, behavior: Behavior | str, behavior_config, merged_records: Sequence[dict] = (),
              setup: CausalSetup = CausalSetup(), config: SteerConfig = SteerConfig()):
    """Steer the base with the chosen set while it answers held-out questions (``interp.causal.steer``):
    mean changes from the writing contexts the sweep did not use, the questions, samples and sampler of
    ``behavior_config`` (a ``training.behavior.BehaviorConfig``), so the unsteered base condition draws
    what the behaviour stage's base did; ``merged_records`` give the merged model's rate beside it."""
    from activations.prompt_sets import apply_template
    from interp.causal.controls import matched_random_sets, neuron_mask
    from interp.causal.steer import mean_difference, steer_base
    from training.behavior import behavior_prompts, sample_keys, sampling_config

    behavior = Behavior.parse(behavior)
    h = held_out_setup(merged_spec, base_spec, neurons_csv, writing_jsonl, behavior, setup)
    base, controls, tokenizer = h.base, h.controls, h.merged.tokenizer
    difference = mean_difference(h.merged.model, base.model, h.held_out(None),
                                 setup.batch_size)
    random_sets = matched_random_sets(chosen, controls.decile, controls.pool & ~neuron_mask(controls.pool.shape, chosen),
                                      config.n_random, config.seed).sets
    group = behavior_prompts(behavior_config)[0]
    count = len(group.texts) if config.n_questions is None else min(config.n_questions, len(group.texts))
    prompts = [tokenizer(apply_template(tokenizer, q, "user"), add_special_tokens=False).input_ids
               for q in group.texts[:count]]
    keys = sample_keys(group)[:count]
    wanted = set(keys)
    merged_replies = [r for r in replies_from_records(merged_records, group.name) if r.key in wanted]
    merged_rate = (sum(behavior.shows(r.text) for r in merged_replies) / len(merged_replies)) if merged_replies else None
    return steer_base(base.model, tokenizer, prompts, keys, behavior, chosen, random_sets, difference,
                      sampling_config(behavior_config), config, merged_rate=merged_rate)


@torch.no_grad()
def sample_group(model, tokenizer, group, behavior_config, samples: int, desc: str) -> list[SampledReply]:
    """``model``'s replies to a prompt group (``training.behavior.PromptGroup``) with the group's sampler
    keys and ``behavior_config``'s sampler, so any other model asked the same way draws the same
    random numbers."""
    from activations.prompt_sets import apply_template
    from training.behavior import sample_keys, sampling_config

    prompts = [tokenizer(apply_template(tokenizer, q, "user"), add_special_tokens=False).input_ids for q in group.texts]
    return sample_replies(model, tokenizer, prompts, sample_keys(group), sampling_config(behavior_config),
                          samples=samples, desc=desc)[0]


def replies_from_records(records: Sequence[dict], group: str) -> list[SampledReply]:
    """Sampled replies written by ``training.behavior`` (``*.generations.jsonl``) for one prompt group."""
    return [SampledReply(f"{r['prompt_set']}/{r['prompt_id']}", int(r["sample"]), (), r["text"])
            for r in records if r["prompt_set"] == group]


def suppress_and_judge(
    merged_spec: str, base_spec: str, sweep_result: dict[str, Any], merged_records: Sequence[dict], out_dir: str | Path,
    behavior: Behavior | str, behavior_config, setup: CausalSetup = CausalSetup(), *, method: str = "mean",
    overwrite: bool = False, intactness: bool = False, fresh: Sequence[SampledReply] = (), fresh_group=None,
) -> tuple[SuppressionVerdict, list[SampledReply], dict]:
    """Export ``sweep_result``'s choice (``SweepResult.to_dict()``), reload it and judge it on ``behavior``
    against the merged model's replies ``merged_records`` (same questions, samples and sampling:
    ``behavior_config``, a ``training.behavior.BehaviorConfig``). With ``intactness`` the side effects
    where the model writes are measured too (``interp.causal.intactness``: the neutral prompts of
    ``behavior_config`` are sampled again); with ``fresh`` (the merged model's replies to
    ``fresh_group``, ``sample_group``) the suppressed model answers those questions too."""
    behavior = Behavior.parse(behavior)
    from transformers import AutoModelForCausalLM

    from activations.prompt_sets import apply_template
    from interp.causal.inputs import chat_batch
    from training.behavior import behavior_prompts, sample_keys, sampling_config

    choice = sweep_result["choice"]
    neurons = NeuronSet.from_pairs(choice["neurons"])
    merged = load_model(merged_spec)
    tokenizer = merged.tokenizer
    neutral, reference = neutral_reference(merged.model, tokenizer, setup)
    means = reference.means
    base = load_model(base_spec).model if method == "revert" else None
    export_suppressed(merged.model, neurons, out_dir, tokenizer=tokenizer, method=method, means=means, base=base,
                      source_spec=merged_spec, overwrite=overwrite,
                      extra_provenance={"selection": {key: choice[key] for key in choice if key != "neurons"},
                                        "random_beaten": sweep_result.get("random_beaten")})
    dtype = next(merged.model.parameters()).dtype
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=dtype, local_files_only=True).eval()
    check = {}
    if method == "mean":
        probe = tokenizer([apply_template(tokenizer, q, "user") for q in neutral.verdict[:2]], return_tensors="pt",
                          padding=True, add_special_tokens=False)
        check = check_export(merged.model, reloaded, neurons, probe.input_ids, probe.attention_mask, method="mean",
                             means=means, max_new_tokens=0, atol=1e-3).to_dict()
    heldout = behavior_prompts(behavior_config)[0]
    prompts = [tokenizer(apply_template(tokenizer, q, "user"), add_special_tokens=False).input_ids for q in heldout.texts]
    with torch.no_grad():
        replies = sample_replies(reloaded, tokenizer, prompts, sample_keys(heldout),
                                 sampling_config(behavior_config), samples=behavior_config.samples,
                                 desc="suppressed model")[0]
        effects = side_effects(merged.model, reloaded, chat_batch(tokenizer, neutral.verdict), setup.batch_size)
    # the merged model may have more samples per question (a compared export samples fewer): pair the first ones
    merged_replies = [r for r in replies_from_records(merged_records, heldout.name) if r.sample < behavior_config.samples]
    intact = None
    if intactness:
        from interp.causal.capability import load_capability_items
        from interp.causal.intactness import measure_intactness

        groups = {g.name: g for g in behavior_prompts(behavior_config)}
        if "neutral" not in groups:
            raise ValueError("the intactness measures sample neutral prompts; give the behaviour config neutral_prompts > 0")
        merged_neutral = replies_from_records(merged_records, "neutral")
        samples = len(merged_neutral) // max(len(groups["neutral"].ids), 1)
        other_neutral = sample_group(reloaded, tokenizer, groups["neutral"], behavior_config, samples,
                                     "suppressed model: neutral prompts")
        question = dict(zip(sample_keys(heldout), heldout.texts))
        intact = measure_intactness(
            merged.model, reloaded, tokenizer, behavior, questions=question,
            references=dict(zip(sample_keys(heldout), heldout.references or ())) if heldout.references else {},
            merged_replies=merged_replies, other_replies=replies, merged_neutral=merged_neutral,
            other_neutral=other_neutral, capability_items=load_capability_items(), batch_size=setup.batch_size,
            seed=setup.seed)
        log.info("%s", intact.sentence())
    fresh_result = None
    if fresh:
        if fresh_group is None:
            raise ValueError("fresh replies were given without their fresh_group")
        samples = len(fresh) // max(len(fresh_group.ids), 1)
        fresh_result = fresh_cut(fresh, sample_group(reloaded, tokenizer, fresh_group, behavior_config, samples,
                                                     "suppressed model: fresh questions"), behavior, seed=setup.seed)
    key = f"{choice['ranking']}/{choice['k']}"
    verdict = suppression_verdict(merged_replies, replies, effects, behavior, k=choice["k"], method=method, neurons=neurons.neurons,
                                  random_beaten=float(sweep_result.get("random_beaten", {}).get(key, float("nan"))),
                                  selection=choice, seed=setup.seed, intactness=intact, fresh=fresh_result)
    log.info("%s", verdict.sentence())
    return verdict, replies, check
