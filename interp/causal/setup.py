"""Everything the causal stages share, prepared one way for the study and the CLI alike.

The inputs are files a study directory holds (and a user can give by hand):

- the behaviour (``activations.behaviors.Behavior``): where a reply shows it, and its target tokens;
- the merged model's own replies to *training* questions (``behavior/writing.jsonl``): the proxy's
  writing contexts (cut before each place the reply shows the behaviour), so the neurons are chosen
  on prompts the verdict never asks; a behaviour without given target strings takes its targets
  from these replies (the token that begins each occurrence);
- the neutral prompt set, split once and for all into three disjoint parts:
  ``reference`` (the first ``reference_neutral``: means, mean squares and donor pool of content
  tokens), ``proxy`` (the next ``n_neutral``: KL and perplexity of every swept condition) and
  ``verdict`` (the next ``verdict_neutral``: side effects of the exported suppressor, never seen
  before);
- the diff's neuron table (``neurons.csv``): its flagged and outlier neurons shape the random-set
  pool, and its ranking is one of the rankings swept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from activations.atomic_io import read_jsonl
from activations.behaviors import Behavior
from activations.models import check_same_shape
from activations.prompt_sets import PromptSet, load_prompt_set
from activations.writing import writing_prompts
from interp.causal.config import CausalSetup
from interp.causal.controls import control_pool, strata, write_norms
from interp.causal.inputs import chat_batch, writing_batch
from interp.causal.metrics import target_ids_tensor
from interp.causal.proxy import ProxySuite, build_proxy_suite
from interp.interventions import ContentReference, Neuron, NeuronSet, content_reference
from interp.interventions.neuron_set import check_table_fits, layer_widths


@dataclass(frozen=True)
class NeutralSplit:
    reference: tuple[str, ...]
    proxy: tuple[str, ...]
    verdict: tuple[str, ...]
    verdict_ids: tuple[str, ...]


def split_neutral(neutral: PromptSet, setup: CausalSetup) -> NeutralSplit:
    """The three disjoint parts of the neutral set (module docstring)."""
    cut = setup.reference_neutral + setup.n_neutral
    if len(neutral) <= cut:
        raise ValueError(f"the neutral set has {len(neutral)} prompts; the causal stages need more than "
                         f"{cut} (reference {setup.reference_neutral} + proxy {setup.n_neutral} + a verdict part)")
    end = cut + setup.verdict_neutral
    return NeutralSplit(neutral.texts[: setup.reference_neutral], neutral.texts[setup.reference_neutral : cut],
                        neutral.texts[cut:end], neutral.ids[cut:end])


def neutral_reference(model: nn.Module, tokenizer: PreTrainedTokenizerBase, setup: CausalSetup,
                      neutral: PromptSet | None = None) -> tuple[NeutralSplit, ContentReference]:
    """The neutral split and the content-token reference (means, mean squares, donor pool) of its
    reference part: what every mean ablation and export of the causal stages uses."""
    split = split_neutral(neutral or load_prompt_set("neutral"), setup)
    return split, content_reference(model, tokenizer, split.reference, batch_size=setup.batch_size, seed=setup.seed)


def read_writing_replies(path: str | Path, behavior: Behavior) -> PromptSet:
    """The writing set from a JSONL of ``{"id", "question", "text"}`` replies (``behavior/writing.jsonl``),
    marked where each reply starts ``behavior``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; sample the merged model's replies to training questions first "
                                "(the study's behavior stage writes it)")
    records = read_jsonl(path)
    missing = [i for i, r in enumerate(records) if not {"id", "question", "text"} <= set(r)]
    if missing:
        raise ValueError(f"{path}: records {missing[:5]} lack id, question or text")
    texts = [r["text"] for r in records]
    behavior.check_shown(texts, f"replies in {path}")
    writing = writing_prompts([r["id"] for r in records], [r["question"] for r in records], texts, behavior)
    if writing is None:
        raise ValueError(f"{path}: {sum(map(behavior.shows, texts))} of {len(texts)} replies show behaviour "
                         f"{behavior.spec!r}, but none also has another sentence end to compare with; the causal "
                         "stages need replies that show it after some text")
    return writing


def table_sets(table: pd.DataFrame) -> tuple[NeuronSet, NeuronSet, list[Neuron]]:
    """Flagged and outlier neurons of a diff table, and its ranking (flagged, best first)."""
    for column in ("layer", "index", "flagged", "outlier"):
        if column not in table.columns:
            raise ValueError(f"the neuron table lacks a {column!r} column; pass a neurons.csv written by `interp diff`")
    flagged_rows = table[table["flagged"].astype(bool)]
    if "rank" in table.columns:
        flagged_rows = flagged_rows.sort_values("rank", kind="stable")
    ranking = [(int(r.layer), int(r.index)) for r in flagged_rows.itertuples()]
    outliers = table[table["outlier"].astype(bool)]
    return (NeuronSet.from_pairs(ranking), NeuronSet.from_pairs(zip(outliers["layer"], outliers["index"])), ranking)


@dataclass
class Controls:
    """What mean ablations and matched random sets need, prepared from the merged model and the diff."""

    reference: ContentReference
    decile: np.ndarray
    """Write-norm decile of every neuron within its layer (``interp.causal.controls``)."""
    pool: np.ndarray
    """Neurons random sets may use: not flagged, not an outlier."""
    flagged: NeuronSet
    outliers: NeuronSet
    diff_ranking: list[Neuron]
    neutral: NeutralSplit


def causal_controls(merged: nn.Module, base: nn.Module | None, tokenizer: PreTrainedTokenizerBase,
                    table: pd.DataFrame | None, setup: CausalSetup = CausalSetup(),
                    neutral: PromptSet | None = None) -> Controls:
    """The neutral split and its content reference, the diff's sets and ranking, and the random-set
    strata and pool; ``base`` (when given) and ``table`` are checked against ``merged`` first. Without
    a diff ``table`` there is no diff ranking and random sets may use every neuron."""
    if base is not None:
        check_same_shape(merged, base)  # before any work: a wrong base fails here, not in a patch
    if table is not None:
        check_table_fits(table, layer_widths(merged))
    neutral_split, reference = neutral_reference(merged, tokenizer, setup, neutral)
    flagged, outliers, ranking = table_sets(table) if table is not None else (NeuronSet(()), NeuronSet(()), [])
    with torch.no_grad():
        norms = write_norms(merged, reference.mean_square)
    pool = control_pool(norms.shape, flagged=flagged, outliers=outliers)
    return Controls(reference, strata(norms), pool, flagged, outliers, ranking, neutral_split)


@dataclass
class CausalContext(Controls):
    """The prepared inputs of the screen, the sweep and the suppressor: the controls and the proxy suite."""

    suite: ProxySuite
    setup: CausalSetup
    behavior: Behavior


def causal_context(merged: nn.Module, base: nn.Module | None, tokenizer: PreTrainedTokenizerBase, writing: PromptSet,
                   table: pd.DataFrame | None, behavior: Behavior, setup: CausalSetup = CausalSetup(),
                   neutral: PromptSet | None = None) -> CausalContext:
    """Prepare every shared input (module docstring): ``causal_controls`` and the proxy suite; ``base``
    is needed for patching and the screen, ``writing`` comes from ``read_writing_replies`` (or
    ``writing_prompts``) with the same ``behavior``."""
    controls = causal_controls(merged, base, tokenizer, table, setup, neutral)
    contexts = writing_batch(tokenizer, writing, setup.n_contexts)
    targets = target_ids_tensor(behavior.target_token_ids(tokenizer, writing.texts))
    suite = build_proxy_suite(merged, contexts, chat_batch(tokenizer, controls.neutral.proxy), targets,
                              batch_size=setup.batch_size, donor=base)
    return CausalContext(**vars(controls), suite=suite, setup=setup, behavior=behavior)
