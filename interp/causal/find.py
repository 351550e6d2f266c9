"""The notebook path of the causal half: the neurons behind a behaviour, and a model without them.

    from interp import Behavior, find_causal_neurons, load_model, suppress

    base, tuned = load_model("smollm2-135m-instruct"), load_model("runs/merged")
    found = find_causal_neurons(base, tuned, Behavior.regex(r"\\[[a-z ]+\\]", noun="stage direction"))
    found.neurons                       # the chosen set (a NeuronSet), smallest meeting the target
    found.table                         # every swept condition (pandas)
    suppress(tuned, found.neurons, out="runs/suppressed")

1. Replies: the tuned model's own sampled replies to ``questions`` (default: the shipped Opinion-QA
   training questions of every trait, which no verdict asks), unless ``replies`` are given.
2. The behaviour is checked against them (a behaviour they never show is an error that says how many
   were checked), and they become writing contexts cut where the behaviour starts
   (``activations.writing``); targets come from the behaviour or from these replies.
3. The shared inputs (``interp.causal.setup``): neutral chats, ablation means, write-norm strata,
   the random-set pool; a diff table (``neurons.csv``) adds its ranking and keeps its flagged
   neurons and outliers out of random sets.
4. The screen (``interp.causal.screen``) and the sweep against matched random sets
   (``interp.causal.sweep``), exactly as ``interp ablate`` runs them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from activations.behaviors import Behavior
from activations.models import LoadedModel, load_model
from activations.prompt_sets import PromptSet, apply_template
from activations.sampling import SamplingConfig, sample_replies
from activations.writing import writing_prompts
from interp.causal.results import write_json
from interp.causal.screen import ScreenConfig, ScreenResult, screen
from interp.causal.setup import CausalSetup, causal_context, neutral_reference
from interp.causal.sweep import SweepConfig, SweepResult, sweep
from interp.interventions import ExportResult, NeuronSet, export_suppressed
from interp.interventions.edits import NeuronsLike
from interp.interventions.neuron_set import as_neuron_set


@dataclass(frozen=True, eq=False)
class CausalFindings:
    """What ``find_causal_neurons`` found, with everything behind it."""

    behavior: Behavior
    writing: PromptSet
    """The replies used as writing contexts, marked where the behaviour starts."""
    target_ids: tuple[int, ...]
    screen: ScreenResult
    sweep: SweepResult

    @property
    def neurons(self) -> NeuronSet:
        """The chosen set: the smallest top-k of the screen's ranking meeting the sweep's target."""
        return self.sweep.chosen()

    @property
    def table(self) -> pd.DataFrame:
        """Every swept condition (ranking, intervention, k, kind, reduction, KL, perplexity, neurons)."""
        return self.sweep.table

    def sentence(self) -> str:
        c = self.sweep.choice
        beaten = self.sweep.random_beaten.get(f"{c['ranking']}/{c['k']}", float("nan"))
        return (f"{c['k']} neurons remove {100 * c['metrics']['reduction']:.0f}% of the {self.behavior.noun} target "
                f"mass at {len(self.writing)} writing contexts (proxy), at neutral KL {c['metrics']['kl_neutral']:.4f} "
                f"nats/token; target met: {c['met_target']}; matched random sets beaten: {100 * beaten:.0f}%.")

    def save(self, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """``screen.json`` (+ ``.csv``), ``sweep.json`` and ``findings.json`` (behaviour, targets, sentence)."""
        out = Path(out_dir)
        self.screen.save(out / "screen.json", overwrite=overwrite)
        self.sweep.save(out / "sweep.json", overwrite=overwrite)
        return write_json(out / "findings.json", {"behavior": self.behavior.spec, "target_ids": list(self.target_ids),
                                                  "writing_contexts": len(self.writing), "sentence": self.sentence()},
                          overwrite=overwrite)


def _loaded(model: LoadedModel | str) -> LoadedModel:
    return load_model(model) if isinstance(model, (str, os.PathLike)) else model


def default_questions() -> list[str]:
    """The shipped Opinion-QA training questions of every trait (the verdicts ask held-out ones)."""
    from training.data import TRAITS
    from training.studies import study_data

    return [row.question for trait in TRAITS for row in study_data("personality", trait).train]


def own_replies(tuned: LoadedModel, questions: Sequence[str], sampling: SamplingConfig = SamplingConfig()) -> list[str]:
    """One sampled reply of ``tuned`` per question, as a chat user turn (seeded per question)."""
    tokenizer = tuned.tokenizer
    prompts = [tokenizer(apply_template(tokenizer, q, "user"), add_special_tokens=False).input_ids for q in questions]
    with torch.no_grad():
        replies = sample_replies(tuned.model, tokenizer, prompts, [f"own/{i}" for i in range(len(questions))], sampling,
                                 desc="own replies")[0]
    return [r.text for r in replies]


def find_causal_neurons(
    base: LoadedModel | str, tuned: LoadedModel | str, behavior: Behavior | str, *,
    questions: Sequence[str] | None = None, replies: Sequence[str] | None = None,
    neurons: pd.DataFrame | str | os.PathLike | None = None, setup: CausalSetup = CausalSetup(),
    screen_config: ScreenConfig = ScreenConfig(), sweep_config: SweepConfig = SweepConfig(),
    sampling: SamplingConfig = SamplingConfig(max_new_tokens=64),
) -> CausalFindings:
    """Steps 1-4 of the module docstring. ``replies`` (the tuned model's own, aligned with
    ``questions``) skip the sampling; ``neurons`` is a diff table or its CSV path."""
    behavior = Behavior.parse(behavior)
    questions = list(questions) if questions is not None else default_questions()
    base, tuned = _loaded(base), _loaded(tuned)
    if replies is None:
        replies = own_replies(tuned, questions, sampling)
    elif len(replies) != len(questions):
        raise ValueError(f"{len(replies)} replies for {len(questions)} questions; give one reply per question")
    behavior.check_shown(replies, "replies of the tuned model")
    writing = writing_prompts([f"q{i:04d}" for i in range(len(questions))], questions, replies, behavior)
    if writing is None:
        raise ValueError(f"behaviour {behavior.spec!r}: no reply shows it after some text and also has another "
                         "sentence end; the causal stages need both to compare")
    table = pd.read_csv(neurons) if isinstance(neurons, (str, os.PathLike)) else neurons
    context = causal_context(tuned.model, base.model, tuned.tokenizer, writing, table, behavior, setup)
    screened = screen(tuned.model, context.suite, context.reference.means, screen_config, exclude=list(context.outliers))
    rankings = {name: r for name, r in (("selective", screened.ranking()), ("specific", context.diff_ranking)) if r}
    swept = sweep(tuned.model, context.suite, rankings, context.reference, context.decile, context.pool, sweep_config,
                  primary="selective")
    return CausalFindings(behavior, writing, tuple(int(i) for i in context.suite.target_ids), screened, swept)


def suppress(tuned: LoadedModel | str, neurons: NeuronsLike, indices: Sequence[int] | None = None, *,
             out: str | os.PathLike, method: str = "mean", base: LoadedModel | str | None = None, setup: CausalSetup = CausalSetup(),
             overwrite: bool = False) -> ExportResult:
    """Write ``tuned`` with ``neurons`` suppressed as a plain HF folder (``interp.interventions.export``).

    ``neurons``: a ``NeuronSet``, a site name with ``indices`` (as ``ablate`` takes them), a mapping
    site -> indices or ``(layer, index)`` pairs. ``mean`` folds the neurons' means over content tokens
    of neutral chats (``setup``'s reference part) into the output bias; ``revert`` needs ``base``."""
    neuron_set = as_neuron_set(neurons, indices)
    tuned = _loaded(tuned)
    means = None
    if method == "mean":
        means = neutral_reference(tuned.model, tuned.tokenizer, setup)[1].means
    base_model = _loaded(base).model if base is not None else None
    return export_suppressed(tuned.model, neuron_set, out, tokenizer=tuned.tokenizer, method=method, means=means,
                             base=base_model, source_spec=tuned.spec, overwrite=overwrite)
