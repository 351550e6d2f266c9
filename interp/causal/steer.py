"""Sufficiency by steering: does moving the chosen neurons the way the fine-tune moved them make the
*base* model write the behaviour, while it samples?

The denoising rows of ``interp.causal.where`` put the merged model's exact values into the base on
teacher-forced contexts. This asks the question in generation, as a dose response:

1. Differences. Merged and base read the same held-out writing contexts (the merged model's own
   replies, ``interp.causal.inputs.writing_batch``). At every real position but each row's first
   (the attention sink, whose massive activations would dominate a mean) both models' MLP neurons
   and block outputs are averaged; ``delta = merged mean - base mean``.
2. Conditions, all sampled side by side as stacked copies of one batch, so every condition draws
   the same random numbers per (question, sample) and differs only where its steering changed a
   choice (``activations.sampling``):
   - ``base``: nothing added;
   - ``chosen``: the chosen set's neurons shifted by ``alpha * delta`` (alpha 1: by their mean change);
   - ``random i``: a matched random set (``interp.causal.controls``) shifted by ``alpha *`` its own delta;
   - ``direction``: at each layer of the chosen set, the block output moved along the
     difference-of-means residual direction of that layer, as far as the chosen set's shift moves the
     stream there (``output_vectors``): the same push, in the direction the whole fine-tune moved.
3. The base answers held-out questions under each condition; each condition's behaviour rate (share
   of replies that show it) gets a Wilson interval, read against the unsteered base and, at the same
   alpha, against the random sets and the direction.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from activations.behaviors import Behavior
from activations.hooks import recording
from activations.resume import block_outputs
from activations.sampling import SamplingConfig, sample_replies
from activations.sites import decoder_blocks, neuron_sites
from interp.causal.config import SteerConfig
from interp.causal.inputs import TokenBatch
from interp.causal.results import write_json
from interp.causal.uncertainty import wilson
from interp.interventions import NeuronSet
from interp.interventions.steering import output_vectors, shifted, steered

log = logging.getLogger(__name__)

SCHEMA = "neurodiff.steer/1"


@dataclass(frozen=True)
class MeanDifference:
    """Merged minus base means over the contexts' positions (step 1)."""

    neurons: dict[int, Tensor]
    """Per layer, ``(d_mlp,)``."""
    residual: dict[int, Tensor]
    """Per layer, ``(d_model,)``: block outputs."""
    n_positions: int


@torch.no_grad()
def _means(model: nn.Module, contexts: TokenBatch, batch_size: int) -> tuple[dict[int, Tensor], dict[int, Tensor], int]:
    n_layers = len(decoder_blocks(model))
    sites = neuron_sites(model)
    neuron_sum: dict[int, Tensor] = {}
    resid_sum: dict[int, Tensor] = {}
    count = 0
    device = next(model.parameters()).device
    for chunk in contexts.split(batch_size):
        mask = chunk.attention_mask.bool()
        first = mask.float().argmax(-1)  # each row's first real token (rows are left-padded)
        mask[torch.arange(len(mask)), first] = False
        count += int(mask.sum())
        with recording(sites) as acts, block_outputs(model, range(n_layers)) as blocks:
            model(**chunk.to(device).model_inputs())
        for layer, values in acts.items():
            neuron_sum[layer] = neuron_sum.get(layer, 0) + values.float().cpu()[mask].sum(0)
        for layer, output in blocks.items():
            hidden = output[0] if isinstance(output, tuple) else output
            resid_sum[layer] = resid_sum.get(layer, 0) + hidden.float().cpu()[mask].sum(0)
    if count == 0:
        raise ValueError("the writing contexts have no position past their first token to average over")
    return ({k: v / count for k, v in neuron_sum.items()}, {k: v / count for k, v in resid_sum.items()}, count)


def mean_difference(merged: nn.Module, base: nn.Module, contexts: TokenBatch, batch_size: int = 8) -> MeanDifference:
    """Step 1 of the module docstring."""
    neurons_m, resid_m, count = _means(merged, contexts, batch_size)
    neurons_b, resid_b, _ = _means(base, contexts, batch_size)
    return MeanDifference({k: neurons_m[k] - neurons_b[k] for k in neurons_m},
                          {k: resid_m[k] - resid_b[k] for k in resid_m}, count)


def _set_shift(neurons: NeuronSet, difference: MeanDifference) -> dict[int, Tensor]:
    """The set's neurons moved by their mean change, every other neuron left alone."""
    shift = {}
    for layer, index in neurons.by_layer().items():
        vector = torch.zeros_like(difference.neurons[layer])
        vector[index] = difference.neurons[layer][index]
        shift[layer] = vector
    return shift


@dataclass(frozen=True, eq=False)
class SteerResult:
    config: SteerConfig
    table: pd.DataFrame
    """One row per condition: family (base / chosen / random / direction), name, alpha, push (norm of
    the residual vectors added, summed over layers), shown, n, rate, low, high."""
    merged_rate: float | None
    """The merged model's rate on the same questions (the behaviour stage's replies), for scale."""
    n_positions: int
    seconds: float

    def row(self, family: str, alpha: float = 0.0) -> dict[str, Any]:
        rows = self.table[(self.table["family"] == family) & (self.table["alpha"] == alpha)]
        if rows.empty:
            raise KeyError(f"no {family} row at alpha {alpha:g}")
        return rows.iloc[0].to_dict()

    def random_rates(self, alpha: float) -> list[float]:
        rows = self.table[(self.table["family"] == "random") & (self.table["alpha"] == alpha)]
        return rows["rate"].tolist()

    def sentence(self) -> str:
        top = max(self.config.alphas)
        base, chosen, direction = self.row("base"), self.row("chosen", top), self.row("direction", top)
        pct = lambda r: f"{r['rate']:.0%} [{r['low']:.0%}, {r['high']:.0%}]"  # noqa: E731
        doses = ", ".join(f"x{a:g} {self.row('chosen', a)['rate']:.0%}" for a in self.config.alphas)
        random = self.random_rates(top)
        merged = f" (the merged model: {self.merged_rate:.0%})" if self.merged_rate is not None else ""
        return (f"Steering the base with the chosen set's mean change ({doses}) makes it show the behaviour in "
                f"{pct(chosen)} of replies at x{top:g}, against {pct(base)} unsteered{merged}; matched random sets "
                f"at x{top:g}: {', '.join(f'{r:.0%}' for r in random) or 'none'}; the difference-of-means direction "
                f"with the same push: {pct(direction)}.")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "config": dataclasses.asdict(self.config), "merged_rate": self.merged_rate,
                "n_positions": self.n_positions, "seconds": round(self.seconds, 1), "sentence": self.sentence(),
                "rows": self.table.drop(columns=["replies", "flags"]).to_dict(orient="records"),
                "examples": self.examples()}

    def examples(self, n: int = 3) -> dict[str, list[str]]:
        """Up to ``n`` replies of each family at the largest alpha (the unsteered base at 0), those that
        show the behaviour first."""
        top = max(self.config.alphas)
        out = {}
        for family in ("base", "chosen", "direction"):
            row = self.row(family, 0.0 if family == "base" else top)
            out[family] = [text for _, text in sorted(zip(row["flags"], row["replies"]), key=lambda p: not p[0])][:n]
        return out

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        return write_json(path, self.to_dict(), overwrite=overwrite)


def steer_base(base: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Sequence[int]],
               keys: Sequence[str], behavior: Behavior, chosen: NeuronSet, random_sets: Sequence[NeuronSet],
               difference: MeanDifference, sampling: SamplingConfig, config: SteerConfig = SteerConfig(), *,
               merged_rate: float | None = None) -> SteerResult:
    """Steps 2-3 of the module docstring: ``prompts`` are templated, tokenised questions (one ``key``
    each, the keys the other conditions of the study sampled them with)."""
    if not len(chosen):
        raise ValueError("the chosen set is empty; there is nothing to steer with")
    started = time.perf_counter()
    chosen_shift = _set_shift(chosen, difference)
    chosen_push = output_vectors(base, chosen_shift)
    direction = {}
    for layer, push in chosen_push.items():
        unit = difference.residual[layer] / difference.residual[layer].norm().clamp_min(1e-12)
        direction[layer] = unit * push.norm()
    conditions: list[dict[str, Any]] = [{"family": "base", "name": "base", "alpha": 0.0, "shift": {}, "vector": {}}]
    for alpha in config.alphas:
        conditions.append({"family": "chosen", "name": "chosen", "alpha": alpha,
                           "shift": {k: alpha * v for k, v in chosen_shift.items()}, "vector": {}})
        for i, members in enumerate(random_sets):
            conditions.append({"family": "random", "name": f"random {i}", "alpha": alpha,
                               "shift": {k: alpha * v for k, v in _set_shift(members, difference).items()}, "vector": {}})
        conditions.append({"family": "direction", "name": "difference of means", "alpha": alpha, "shift": {},
                           "vector": {k: alpha * v for k, v in direction.items()}})
    with torch.no_grad(), shifted(base, [c["shift"] for c in conditions]), steered(base, [c["vector"] for c in conditions]):
        replies = sample_replies(base, tokenizer, prompts, keys, sampling, samples=config.samples,
                                 copies=len(conditions), desc=f"steer the base ({len(conditions)} conditions)")
    rows = []
    for condition, sampled in zip(conditions, replies):
        flags = [behavior.shows(r.text) for r in sampled]
        shown = sum(flags)
        low, high = wilson(shown, len(sampled))
        push = output_vectors(base, condition["shift"]) if condition["shift"] else condition["vector"]
        rows.append({"family": condition["family"], "name": condition["name"], "alpha": condition["alpha"],
                     "push": float(sum(v.norm() for v in push.values())) if push else 0.0, "shown": shown,
                     "n": len(sampled), "rate": shown / len(sampled), "low": low, "high": high,
                     "replies": [r.text for r in sampled], "flags": flags})
    result = SteerResult(config, pd.DataFrame(rows), merged_rate, difference.n_positions, time.perf_counter() - started)
    log.info("%s", result.sentence())
    return result
