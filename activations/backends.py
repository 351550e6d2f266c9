"""Backends: three ways to read the neuron vectors of a batch, behind one interface.

A backend is a context manager ``backend(model, tokenizer, sites) -> run`` that sets itself up on enter,
yields ``run(batch) -> {layer: (batch, pos, d_mlp)}``, and on exit leaves the model as it was.

  ``native``   our forward pre-hooks (``activations.hooks.recording``) on the decoder body only:
               no LM head, and the forward stops at the last recorded layer. The default.
  ``tlens``    TransformerLens 4's ``TransformerBridge`` around a copy of the model, reading
               ``blocks.{L}.mlp.hook_post`` (an alias of the output projection's ``hook_in``).
  ``nnsight``  an nnsight ``LanguageModel`` around the model, saving the input of each output projection.

All three get the same token ids, attention mask and position ids, so results agree to float error.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from activations.hooks import hooked, recording
from activations.sites import NeuronSite, unwrap_model


@dataclass(frozen=True)
class ModelBatch:
    """Model inputs for one padded batch (either padding side)."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    """1 for real tokens, 0 for padding."""

    @property
    def position_ids(self) -> Int[Tensor, "batch pos"]:
        # Count real tokens only, so a left-padded prompt sees the positions it would see alone
        # (matters for absolute position embeddings such as GPT-2's).
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)


LayerActs = dict[int | str, Float[Tensor, "batch pos d_mlp"]]
"""Neuron vectors by ``NeuronSite.key``: the layer, or an expert site's name."""
RunBatch = Callable[[ModelBatch], LayerActs]
Backend = Callable[[nn.Module, PreTrainedTokenizerBase, Sequence[NeuronSite]], AbstractContextManager[RunBatch]]


class _StopForward(Exception):
    """Raised from the last recorded site: nothing after it is needed."""


def _raise_stop(acts: Tensor) -> None:
    raise _StopForward


@contextmanager
def native_backend(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, sites: Sequence[NeuronSite]
) -> Iterator[RunBatch]:
    """Our hooks; runs the decoder body without the LM head and stops after the last site."""
    body = unwrap_model(model).base_model  # peft's LoRA layers are injected in place, so they still run
    last = max(sites, key=lambda site: site.order)
    with recording(sites) as latest, hooked([(last, _raise_stop)]):  # registered after: runs after recording

        def run(batch: ModelBatch) -> LayerActs:
            latest.clear()
            try:
                body(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     position_ids=batch.position_ids, use_cache=False)
            except _StopForward:
                pass
            return {site.key: latest[site.key] for site in sites}

        yield run


@contextmanager
def tlens_backend(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, sites: Sequence[NeuronSite]
) -> Iterator[RunBatch]:
    """TransformerLens 4 ``TransformerBridge`` booted around a deep copy of the model.

    The copy is needed because booting rewires the model it is given (bridge components replace its
    modules and attention is switched to eager); the caller's model must leave unchanged.
    """
    from transformer_lens.model_bridge import TransformerBridge

    bare = unwrap_model(model)
    twin = copy.deepcopy(bare)
    parameter = next(twin.parameters())
    bridge = TransformerBridge.boot_transformers(
        bare.config.name_or_path or bare.config.model_type,
        hf_model=twin,
        tokenizer=copy.deepcopy(tokenizer),  # the bridge configures (mutates) the tokenizer it gets
        device=parameter.device,
        dtype=parameter.dtype,
    )
    names = {f"blocks.{site.layer}.mlp.hook_post": site.layer for site in sites}
    n_layers = len(bridge.blocks)
    stop = max(names.values()) + 1

    def run(batch: ModelBatch) -> LayerActs:
        _, cache = bridge.run_with_cache(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            names_filter=list(names),
            return_cache_object=False,
            stop_at_layer=stop if stop < n_layers else None,
        )
        return {layer: cache[name] for name, layer in names.items()}

    try:
        yield run
    finally:
        del bridge, twin


def _module_path(root: nn.Module, module: nn.Module) -> str:
    for name, candidate in root.named_modules():
        if candidate is module:
            return name
    raise ValueError(f"site module {type(module).__name__} is not part of the model")


def _envoy_at(envoy: object, dotted: str) -> object:
    for part in dotted.split("."):
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


@contextmanager
def _restoring_instance_attrs(model: nn.Module) -> Iterator[None]:
    """Drop, on exit, every instance attribute added to the model's modules inside the block.

    nnsight instruments the modules it wraps for good (an instance ``forward`` wrapper and its state
    under ``__nnsight__``); without this a model would leave the backend slower and not as it entered.
    """
    before = {module: set(vars(module)) for module in model.modules()}
    try:
        yield
    finally:
        for module, keys in before.items():
            for key in set(vars(module)) - keys:
                delattr(module, key)


@contextmanager
def nnsight_backend(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, sites: Sequence[NeuronSite]
) -> Iterator[RunBatch]:
    """nnsight 0.8 ``LanguageModel`` around the loaded model; saves each output projection's input.

    nnsight needs the source of the code inside a trace, so the trace lives here, in a real file.
    """
    import nnsight

    bare = unwrap_model(model)
    paths = {site.layer: _module_path(bare, site.module) for site in sites}
    ordered = sorted(paths)  # save in forward order, as nnsight requires
    with _restoring_instance_attrs(bare):
        with warnings.catch_warnings():  # LanguageModel is deprecated in 0.8 in favour of TransformersModel
            warnings.simplefilter("ignore")
            # A copy: nnsight sets the padding side of the tokenizer it is given.
            wrapped = nnsight.LanguageModel(bare, tokenizer=copy.deepcopy(tokenizer))

        def run(batch: ModelBatch) -> LayerActs:
            saved = {}
            with wrapped.trace(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               position_ids=batch.position_ids, use_cache=False) as tracer:
                for layer in ordered:
                    saved[layer] = _envoy_at(wrapped, paths[layer]).input.save()
                tracer.stop()  # the rest of the forward (and the LM head) is not needed
            # OPT's output projection sees (batch * pos, d_mlp) rows; every other one already has this shape.
            return {layer: saved[layer].reshape(*batch.input_ids.shape, -1) for layer in paths}

        yield run


BACKENDS: dict[str, Backend] = {
    "native": native_backend,
    "tlens": tlens_backend,
    "nnsight": nnsight_backend,
}


def open_backend(
    name: str, model: nn.Module, tokenizer: PreTrainedTokenizerBase, sites: Sequence[NeuronSite]
) -> AbstractContextManager[RunBatch]:
    """The named backend, set up for ``sites`` of ``model``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if not sites:
        raise ValueError("no neuron sites to record; pass at least one layer")
    if name != "native" and any(site.key != site.layer for site in sites):
        raise ValueError(f"the {name} backend sees a mixture-of-experts layer's fused experts module, not each "
                         "expert's neurons; capture expert sites with backend 'native'")
    return BACKENDS[name](model, tokenizer, sites)


@torch.inference_mode()
def run_backend(
    name: str, model: nn.Module, tokenizer: PreTrainedTokenizerBase, sites: Sequence[NeuronSite], batch: ModelBatch
) -> LayerActs:
    """One batch through a freshly opened backend (for tests and one-off checks)."""
    with open_backend(name, model, tokenizer, sites) as run:
        return {key: acts.clone() for key, acts in run(batch).items()}
