"""Attribution patching: first-order estimates of every neuron's patching effect in one pass.

The one implementation behind the screen (``interp.causal.screen``), its benchmark and the notebook
API. For a metric M (a
mean over scored positions) of a receiver model and target activations a' (another model's, on the
same tokens), the effect of patching neuron (l, i) is estimated by a first-order Taylor expansion
around the receiver's own run:

    effect(l, i) ~= sum_{rows, positions} dM/da[l, i] * (a'[l, i] - a[l, i])

1. Forward the receiver once with hooks that keep each layer's neuron vector (a tensor in the
   autograd graph; a hook on the input embeddings makes the graph exist even when every weight is
   frozen), compute M, and take ``torch.autograd.grad`` of M with respect to all kept vectors in
   one backward pass: every neuron's gradient at every position.
2. Any number of targets share that pass: a' recorded with another model (patching), a' = 0 (zero
   ablation), a' = the neuron's mean (mean ablation), ...
3. Multiply, mask out padding, sum over rows and positions. Minibatches are combined weighted by
   their scored-position counts, as M itself is. The sum of |contributions| is kept too: a neuron
   whose positions push M both ways has a small net estimate and may still matter (the screen's
   cancellation guard).
4. ``exact_effects`` patches neurons one at a time for real, to check the estimates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from activations.hooks import hooked
from activations.resume import block_outputs, resume_from, resumes_exactly
from activations.sites import neuron_sites
from interp.causal.inputs import TokenBatch, scored_forward
from interp.causal.metrics import LogitMetric
from interp.interventions import Neuron, NeuronSet, ablate, patch, record_neurons

log = logging.getLogger(__name__)

Target = Callable[[TokenBatch], dict[int, Tensor]]
"""Target neuron vectors ``(batch, pos, d_mlp)`` by layer for one minibatch."""

ChunkTarget = Callable[[int, TokenBatch, dict[int, Tensor]], dict[int, Tensor]]
"""``(chunk index, chunk, the receiver's own vectors by layer) -> target vectors by layer``."""


@dataclass(frozen=True)
class AttributionScores:
    """Estimated effect on the metric of patching each neuron, ``scores[layer_row, index]``."""

    layers: tuple[int, ...]
    scores: np.ndarray
    metric_clean: float
    seconds: float
    magnitude: np.ndarray | None = None
    """Sum over rows and positions of |per-position contribution| (step 3), same shape as ``scores``."""

    def ranked(self, n: int | None = None) -> list[Neuron]:
        """Neurons by decreasing |estimate|."""
        order = np.argsort(-np.abs(self.scores), axis=None, kind="stable")[:n]
        rows, cols = np.unravel_index(order, self.scores.shape)
        return [(self.layers[r], int(c)) for r, c in zip(rows, cols)]

    def score(self, neuron: Neuron) -> float:
        return float(self.scores[self.layers.index(neuron[0]), neuron[1]])


@contextmanager
def _graph_from_embeddings(model: nn.Module) -> Iterator[None]:
    """Make the embeddings' output require grad (frozen weights would otherwise build no graph)."""
    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        return output if output.requires_grad else output.detach().requires_grad_(True)

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def metric_gradients(model: nn.Module, batch: TokenBatch, metric: LogitMetric) -> tuple[float, dict[int, Tensor], dict[int, Tensor]]:
    """M, and every layer's neuron vector and dM/d(vector), from one forward and one backward pass."""
    sites = neuron_sites(model)
    kept: dict[int, Tensor] = {}

    def keep(layer: int):
        def fn(acts: Tensor) -> None:
            kept[layer] = acts
        return fn

    with _graph_from_embeddings(model), hooked([(s, keep(s.layer)) for s in sites]), torch.enable_grad():
        logits, mask = scored_forward(model, batch)
        value = metric(logits, mask)
        layers = [s.layer for s in sites]
        grads = torch.autograd.grad(value, [kept[layer] for layer in layers])
    return float(value.detach()), {layer: kept[layer].detach() for layer in layers}, dict(zip(layers, grads))


def attribute(model: nn.Module, chunks: Sequence[TokenBatch], metric: LogitMetric,
              targets: Mapping[str, ChunkTarget]) -> dict[str, AttributionScores]:
    """Steps 1-3 for every target at once: one forward and one backward pass per chunk."""
    start = time.perf_counter()
    layers = tuple(s.layer for s in neuron_sites(model))
    total_scored = max(sum(chunk.n_scored for chunk in chunks), 1)
    sums: dict[str, dict[int, Tensor]] = {name: {} for name in targets}
    magnitudes: dict[str, dict[int, Tensor]] = {name: {} for name in targets}
    metric_total = 0.0
    for index, chunk in enumerate(tqdm(chunks, desc="attribution", leave=False)):
        weight = chunk.n_scored / total_scored
        value, acts, grads = metric_gradients(model, chunk, metric)
        real = chunk.attention_mask[..., None].to(acts[layers[0]].dtype)
        for name, target in targets.items():
            values = target(index, chunk, acts)
            for layer in layers:
                contribution = grads[layer] * ((values[layer].to(acts[layer].dtype) - acts[layer]) * real)
                for into, part in ((sums[name], contribution), (magnitudes[name], contribution.abs())):
                    part = part.sum((0, 1)).double().cpu() * weight
                    into[layer] = into[layer] + part if layer in into else part
        metric_total += value * weight
    seconds = time.perf_counter() - start
    stack = lambda by_layer: torch.stack([by_layer[layer] for layer in layers]).numpy()  # noqa: E731
    return {name: AttributionScores(layers, stack(sums[name]), metric_total, seconds, stack(magnitudes[name]))
            for name in targets}


def attribution_scores(
    model: nn.Module, batch: TokenBatch, metric: LogitMetric, target: Target | None, batch_size: int = 4
) -> AttributionScores:
    """Steps 1-3 for one target: ``target`` None means a' = 0 (zero ablation)."""
    chunks = list(batch.to(next(model.parameters()).device).split(batch_size))
    if target is None:
        chunk_target: ChunkTarget = lambda index, chunk, acts: {layer: torch.zeros_like(a) for layer, a in acts.items()}  # noqa: E731
    else:
        chunk_target = lambda index, chunk, acts: target(chunk)  # noqa: E731
    return attribute(model, chunks, metric, {"scores": chunk_target})["scores"]


@torch.no_grad()
def exact_effects(
    model: nn.Module, batch: TokenBatch, metric: LogitMetric, neurons: Sequence[Neuron], target: Target | None,
    batch_size: int = 4,
) -> tuple[np.ndarray, float]:
    """The exact change in M from patching each neuron alone (target None: zero-ablating it), and
    the seconds per neuron (clean runs and target recordings are shared, so not counted).

    A patch at layer L cannot change layers below L, so each patched pass resumes at L from the
    clean pass's block outputs (``activations.resume``) when the model passes that check; the
    result is the same as a full pass, only cheaper."""
    chunks = list(batch.to(next(model.parameters()).device).split(batch_size))
    weights = [chunk.n_scored / max(batch.n_scored, 1) for chunk in chunks]
    layers = sorted({layer for layer, _ in neurons})
    deepest = max(layers, default=0)
    skip = False
    if deepest > 0 and chunks:  # only neurons above layer 0 have earlier layers to skip
        skip = resumes_exactly(model, dict(input_ids=chunks[0].input_ids, attention_mask=chunks[0].attention_mask), deepest)
        if not skip:
            log.info("resuming passes at a layer does not reproduce this model's logits; using full passes")
    earlier = sorted({layer - 1 for layer in layers if layer > 0}) if skip else []
    clean, saved = [], []
    for chunk in chunks:
        with block_outputs(model, earlier) as outputs:
            clean.append(float(metric(*scored_forward(model, chunk))))
        saved.append(dict(outputs))
    targets = [target(c) if target is not None else None for c in chunks]
    targets = [{layer: t[layer] for layer in layers} if t is not None else None for t in targets]  # keep only what is used
    start = time.perf_counter()
    effects = np.zeros(len(neurons))
    for n, neuron in enumerate(tqdm(neurons, desc="exact patching", leave=False)):
        single = NeuronSet.from_pairs([neuron])
        layer = neuron[0]
        for chunk, values, clean_value, weight, outputs in zip(chunks, targets, clean, weights, saved):
            edit = ablate(model, single, "zero") if values is None else patch(model, single, values)
            resume = resume_from(model, layer, outputs[layer - 1]) if skip and layer > 0 else nullcontext()
            with resume, edit:
                value = float(metric(*scored_forward(model, chunk)))
            effects[n] += (value - clean_value) * weight
    return effects, (time.perf_counter() - start) / max(len(neurons), 1)


def patch_target(donor: nn.Module) -> Target:
    """a' = ``donor``'s neuron vectors on the same minibatch (cross-model patching)."""
    return lambda chunk: record_neurons(donor, chunk.input_ids, chunk.attention_mask)


