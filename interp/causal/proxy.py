"""Cheap, exact measurements of many interventions: the teacher-forced proxy of the causal stages.

Sampling replies is the honest measure of a behaviour, and far too slow to run for hundreds of
conditions on a CPU. The proxy runs each intervention over two fixed, short batches:

- writing contexts (``interp.causal.inputs.writing_batch``): the merged model's own replies cut at
  the token before each place it showed the behaviour (``activations.behaviors``); scored there by
  the log probability of the behaviour's target tokens (how much an intervention removes the
  decision to start it);
- templated neutral chats (``chat_batch``): next-token KL to the unedited model and perplexity
  (what the intervention breaks).

1. ``build_proxy_suite`` computes the clean values once, and (for patching) records the donor
   model's neuron vectors on exactly these rows.
2. ``measure_sets`` runs up to ``max_copies`` neuron sets at a time as stacked copies of each batch
   (``interp.interventions.intervene_stacked``). A set's edits cannot change layers below its
   lowest layer, so every pass resumes at the group's lowest layer from the clean run's block
   outputs (``activations.resume``; checked once per model, full passes otherwise). Single-neuron
   sets grouped by layer make this the exact verification of an attribution screen.
The numbers are exact for these inputs; what they stand for (the behaviour in sampled replies) is
the headline measurement's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from activations import distributed
from activations.resume import block_outputs, resume_from, resumes_exactly
from activations.sites import decoder_blocks
from interp.causal.inputs import TokenBatch, scored_forward
from interp.causal.metrics import log_target_mass, nll_sum
from interp.interventions import NeuronSet, record_neurons
from interp.interventions.stacked import intervene_stacked


@dataclass
class ProxySuite:
    """The proxy's inputs and clean values (step 1)."""

    contexts: list[TokenBatch]
    """Writing contexts, in chunks; one scored position per row."""
    neutral: list[TokenBatch]
    """Templated neutral chats, in chunks."""
    target_ids: Tensor
    """The behaviour's target token ids."""
    clean_log_mass: np.ndarray
    """``(n_contexts,)`` log P(target) at each context's scored position, unedited."""
    clean_logp: list[Tensor]
    """Per neutral chunk: unedited log-probabilities at the scored positions ``(n_scored, vocab)``."""
    clean_nll: float
    n_neutral_scored: int
    donor_values: dict[str, list[dict[int, Tensor]]] | None = None
    """``{"contexts" | "neutral": per chunk {layer: (rows, pos, d_mlp)}}`` of the donor model (patching)."""
    resumable: bool = False
    clean_blocks: dict[str, list[dict[int, object]]] | None = None
    """``{"contexts" | "neutral": per chunk {layer: block output}}`` of the unedited run (for resuming)."""

    @property
    def n_contexts(self) -> int:
        return len(self.clean_log_mass)

    def head(self, n: int) -> ProxySuite:
        """The suite restricted to its first ``n`` writing contexts (cheaper exact checks), within
        the first chunk; the neutral chats are kept."""
        first = self.contexts[0]
        n = min(n, len(first))
        rows = slice(0, n)
        chunk = TokenBatch(first.input_ids[rows], first.attention_mask[rows], first.score_mask[rows], first.ids[rows])
        pick = lambda values: {k: _rows(v, rows) for k, v in values.items()}  # noqa: E731
        blocks = None if self.clean_blocks is None else {**self.clean_blocks, "contexts": [pick(self.clean_blocks["contexts"][0])]}
        donor = None if self.donor_values is None else {**self.donor_values, "contexts": [pick(self.donor_values["contexts"][0])]}
        return ProxySuite([chunk], self.neutral, self.target_ids, self.clean_log_mass[:n], self.clean_logp,
                          self.clean_nll, self.n_neutral_scored, donor, self.resumable, blocks)

    @property
    def clean_mass(self) -> float:
        return float(np.exp(self.clean_log_mass).mean())

    @property
    def clean_ppl(self) -> float:
        return math.exp(self.clean_nll / max(self.n_neutral_scored, 1))


@dataclass(frozen=True)
class ProxyResult:
    """One neuron set under one intervention, on the proxy's inputs."""

    log_mass: np.ndarray
    """``(n_contexts,)`` log P(target) at the scored positions."""
    kl_neutral: float
    """Mean next-token KL(unedited || edited) per scored neutral position (NaN when not measured)."""
    ppl_neutral: float
    clean_log_mass: np.ndarray

    @property
    def mass(self) -> float:
        """Target probability, mean over contexts."""
        return float(np.exp(self.log_mass).mean())

    @property
    def reduction(self) -> float:
        """Share of the clean target mass (mean over contexts) the intervention removed."""
        clean = float(np.exp(self.clean_log_mass).mean())
        return 1.0 - self.mass / clean if clean > 0 else float("nan")

    @property
    def log_mass_change(self) -> float:
        return float((self.log_mass - self.clean_log_mass).mean())

    def metrics(self) -> dict[str, float]:
        return {"mass": self.mass, "reduction": self.reduction,
                "log_mass_change": self.log_mass_change, "kl_neutral": self.kl_neutral,
                "ppl_neutral": self.ppl_neutral}


def _log_target_mass(logits: Tensor, mask: Tensor, target_ids: Tensor) -> Tensor:
    """Per row, log P(target) at its scored positions (one per row for writing contexts)."""
    log_mass = log_target_mass(logits, target_ids)
    return (log_mass * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@torch.no_grad()
def build_proxy_suite(model: nn.Module, contexts: TokenBatch, neutral: TokenBatch, target_ids: Tensor, *,
                      batch_size: int = 8, donor: nn.Module | None = None) -> ProxySuite:
    """Step 1 of the module docstring (``donor``: the model patching takes values from)."""
    device = next(model.parameters()).device
    context_chunks = list(contexts.to(device).split(batch_size))
    neutral_chunks = list(neutral.to(device).split(batch_size))
    first = context_chunks[0]
    n_layers = len(decoder_blocks(model))
    resumable = resumes_exactly(model, first.model_inputs(), max(1, n_layers // 2))
    blocks: dict[str, list[dict[int, object]]] = {"contexts": [], "neutral": []}
    log_masses = []
    for chunk in context_chunks:
        with block_outputs(model, range(n_layers - 1) if resumable else []) as outputs:
            log_masses.append(_log_target_mass(*scored_forward(model, chunk), target_ids).double().cpu().numpy())
        blocks["contexts"].append(dict(outputs))
    clean_logp, nll, n_scored = [], 0.0, 0
    for chunk in neutral_chunks:
        with block_outputs(model, range(n_layers - 1) if resumable else []) as outputs:
            logits = model(**chunk.model_inputs()).logits
        blocks["neutral"].append(dict(outputs))
        clean_logp.append(logits.float().log_softmax(-1)[chunk.score_mask])
        nll += float(nll_sum(logits, chunk.input_ids, chunk.score_mask))
        n_scored += int(chunk.score_mask[:, :-1].sum())
    donor_values = None
    if donor is not None:
        donor_values = {name: [record_neurons(donor, c.input_ids, c.attention_mask) for c in chunks]
                        for name, chunks in (("contexts", context_chunks), ("neutral", neutral_chunks))}
    return ProxySuite(context_chunks, neutral_chunks, target_ids, np.concatenate(log_masses), clean_logp, nll, n_scored,
                      donor_values, resumable, blocks if resumable else None)


def _rows(output, rows: slice):
    if isinstance(output, Tensor):
        return output[rows]
    if isinstance(output, tuple):
        return tuple(o[rows] if isinstance(o, Tensor) else o for o in output)
    return output


def _tile(output, copies: int):
    if isinstance(output, Tensor):
        return output.repeat(copies, *([1] * (output.dim() - 1)))
    if isinstance(output, tuple):
        return tuple(_tile(o, copies) if isinstance(o, Tensor) else o for o in output)
    return output


def _stack(chunk: TokenBatch, copies: int) -> TokenBatch:
    return TokenBatch(chunk.input_ids.repeat(copies, 1), chunk.attention_mask.repeat(copies, 1),
                      chunk.score_mask.repeat(copies, 1), chunk.ids * copies)


def _edited(model: nn.Module, suite: ProxySuite, group: Sequence[NeuronSet], mode: str, reference, which: str,
            index: int):
    if mode == "patch":
        if suite.donor_values is None:
            raise ValueError("patching needs donor values: build the proxy suite with donor=the base model")
        reference = suite.donor_values[which][index]
    return intervene_stacked(model, group, mode, reference)


@torch.no_grad()
def _measure_group(model: nn.Module, suite: ProxySuite, group: Sequence[NeuronSet], mode: str, reference,
                   neutral: bool) -> list[ProxyResult]:
    copies = len(group)
    lowest = min((min(s.layers) for s in group if len(s)), default=0)
    resume_layer = lowest if suite.resumable and lowest > 0 else 0

    def resumed(which: str, index: int):
        if not resume_layer:
            return nullcontext()
        return resume_from(model, resume_layer, _tile(suite.clean_blocks[which][index][resume_layer - 1], copies))

    log_mass = []
    for index, chunk in enumerate(suite.contexts):
        with resumed("contexts", index), _edited(model, suite, group, mode, reference, "contexts", index):
            logits, mask = scored_forward(model, _stack(chunk, copies))
        log_mass.append(_log_target_mass(logits, mask, suite.target_ids).double().cpu().view(copies, -1))
    per_copy = torch.cat(log_mass, 1).numpy()
    kl = np.full(copies, np.nan)
    ppl = np.full(copies, np.nan)
    if neutral:
        kl_sum, nll = np.zeros(copies), np.zeros(copies)
        for index, chunk in enumerate(suite.neutral):
            with resumed("neutral", index), _edited(model, suite, group, mode, reference, "neutral", index):
                logits = model(**_stack(chunk, copies).model_inputs()).logits
            for copy, copy_logits in enumerate(logits.unflatten(0, (copies, len(chunk)))):
                logp = copy_logits.float().log_softmax(-1)[chunk.score_mask]
                clean = suite.clean_logp[index]
                kl_sum[copy] += float((clean.exp() * (clean - logp)).sum())
                nll[copy] += float(nll_sum(copy_logits, chunk.input_ids, chunk.score_mask))
        n_kl = sum(int(c.score_mask.sum()) for c in suite.neutral)
        kl = kl_sum / max(n_kl, 1)
        ppl = np.exp(nll / max(suite.n_neutral_scored, 1))
    return [ProxyResult(per_copy[c], float(kl[c]), float(ppl[c]), suite.clean_log_mass) for c in range(copies)]


@torch.no_grad()
def context_log_mass(model: nn.Module, suite: ProxySuite) -> np.ndarray:
    """``(n_contexts,)`` log P(target) at the suite's writing contexts for ``model`` as it runs now,
    e.g. inside an intervention that is not a neuron set (``interp.interventions.projected_out``)."""
    return np.concatenate([_log_target_mass(*scored_forward(model, chunk), suite.target_ids).double().cpu().numpy()
                           for chunk in suite.contexts])


def measure_sets(model: nn.Module, suite: ProxySuite, sets: Sequence[NeuronSet], mode: str, reference=None, *,
                 neutral: bool = True, max_copies: int = 8, desc: str | None = None) -> list[ProxyResult]:
    """Each set under intervention ``mode`` (``zero`` / ``mean`` / ``resample`` / ``patch``), step 2.

    Sets are grouped by their lowest layer (so resumed passes skip the most), ``max_copies`` at a time.
    Under ``torch.distributed`` each rank measures every ``world``-th group on its own model replica
    and every rank receives all results: the groups are the single-process ones, so the numbers are
    too, and callers (the screen, the sweep's bisection) take the same decisions on every rank."""
    order = sorted(range(len(sets)), key=lambda i: (min(sets[i].layers) if len(sets[i]) else 0, i))
    results: list[ProxyResult | None] = [None] * len(sets)
    groups = [order[i : i + max_copies] for i in range(0, len(order), max_copies)]
    w = distributed.world()
    mine = distributed.my_stride(groups, w)
    measured = []
    for group in tqdm(mine, desc=desc or f"proxy {mode}", unit="group", leave=False, disable=len(mine) < 2):
        measured.extend(zip(group, _measure_group(model, suite, [sets[i] for i in group], mode, reference, neutral)))
    for i, result in distributed.gather_blocks(measured, w):
        results[i] = result
    return results  # type: ignore[return-value]
