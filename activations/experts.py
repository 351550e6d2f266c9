"""Mixture-of-experts neuron sites: each expert's MLP neurons, seen only by the tokens routed to it.

In transformers 5.x (read: 5.24) Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE keep all experts of a
layer in one module with fused weights, ``experts.gate_up_proj`` ``(E, 2 d, H)`` (gate rows first,
then up) and ``experts.down_proj`` ``(E, H, d)``, called as ``experts(x, top_k_index,
top_k_weights)`` on flattened tokens after the router chose. There is no per-expert module to hook,
so while a site of a layer's experts is hooked, that module's forward is replaced by ``dispatch``
below: the same computation as transformers' eager loop (for each expert, its routed tokens'
``act(gate) * up``, then ``down_proj``, weighted and summed), with the expert's neuron rows handed to
the hooks in between. Expert ``E`` of layer ``L`` is the site ``blocks.L.mlp.experts.E.hook_post``
with ``d`` neurons; a shared expert (Qwen2-MoE) is a dense site of its own,
``blocks.L.mlp.shared_expert.hook_post``.

A hook on an expert site receives ``(batch, pos, d)`` like any other site, holding the expert's
values at the tokens routed to it and **NaN at every token that was not** (the routing mask is
``~acts.isnan().all(-1)``; ``routed``). Whatever a hook returns counts only at the routed tokens, so
ablating, patching or scaling an expert's neurons acts on exactly the tokens that expert saw.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from types import MethodType

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn
from torch.nn import functional as F

from activations.sites import ArchSpec, NeuronSite, UnsupportedArchitectureError, _resolve, neuron_sites

EXPERT_TEMPLATE = "blocks.{layer}.mlp.experts.{expert}.hook_post"
SHARED_TEMPLATE = "blocks.{layer}.mlp.shared_expert.hook_post"
_FNS = "_neurodiff_expert_fns"
"""Instance attribute of a hooked experts module: its ``(expert, fn)`` hooks, in registration order."""

_NAME = re.compile(r"blocks\.(\d+)\.mlp\.(?:experts\.\d+|shared_expert)\.hook_post")

RowFn = Callable[[Float[Tensor, "tokens d"]], "Tensor | None"]
"""A hook on one expert's neurons over the flattened tokens (NaN rows: tokens not routed to it)."""


def routed(acts: Float[Tensor, "... d"]) -> Bool[Tensor, "..."]:
    """Which tokens of an expert site's recording the router sent to the expert."""
    return ~acts.isnan().all(-1)


def is_expert_site(name: object) -> bool:
    """Whether ``name`` is an expert's or a shared expert's site name (``blocks.3.mlp.experts.5.hook_post``)."""
    return isinstance(name, str) and _NAME.fullmatch(name.strip()) is not None


def sites_named(model: nn.Module, names: Sequence[str]) -> list[NeuronSite]:
    """The sites of ``model`` with these names (expert, shared-expert or layer sites), in that order."""
    layers = sorted({int(match.group(1)) for name in names if (match := _NAME.fullmatch(name.strip()))})
    found = {site.name: site for site in neuron_sites(model, layers or None)}
    missing = [name for name in names if name.strip() not in found]
    if missing:
        raise ValueError(f"no sites {missing} in this model; its sites there are {sorted(found)[:6]}...")
    return [found[name.strip()] for name in names]


def _fused_layout_problems(experts: nn.Module) -> list[str]:
    """What keeps ``dispatch`` from recomputing this experts module exactly (empty when nothing)."""
    problems = []
    gate_up, down = getattr(experts, "gate_up_proj", None), getattr(experts, "down_proj", None)
    if not isinstance(gate_up, Tensor) or gate_up.dim() != 3:
        problems.append("no 3-D parameter gate_up_proj (E, 2 d, H)")
    if not isinstance(down, Tensor) or down.dim() != 3:
        problems.append("no 3-D parameter down_proj (E, H, d)")
    if not problems and (gate_up.shape[0] != down.shape[0] or gate_up.shape[1] != 2 * down.shape[2]
                         or gate_up.shape[2] != down.shape[1]):
        problems.append(f"gate_up_proj {tuple(gate_up.shape)} and down_proj {tuple(down.shape)} do not match "
                        "(E, 2 d, H) and (E, H, d)")
    if not callable(getattr(experts, "act_fn", None)):
        problems.append("no act_fn")
    # Flags transformers' use_experts_implementation sets; other layouts need their own dispatch.
    for flag, wanted in (("has_gate", True), ("is_concatenated", True), ("is_transposed", False),
                         ("has_bias", False), ("has_post_expert_norm", False)):
        if getattr(experts, flag, wanted) != wanted:
            problems.append(f"{flag}={not wanted}")
    return problems


def expert_sites(blocks: nn.ModuleList, spec: ArchSpec, layers: list[int]) -> list[NeuronSite]:
    """Per layer of ``layers``: the shared expert's site (if the row names one), then every expert's."""
    block_path = spec.out_proj.rpartition(".")[0]
    sites = []
    for layer in layers:
        experts = _resolve(blocks[layer], spec.out_proj)
        problems = _fused_layout_problems(experts)
        if problems:
            raise UnsupportedArchitectureError(
                f"layer {layer}: {type(experts).__name__} at {spec.out_proj} is not a fused experts module this "
                f"dispatch recomputes ({'; '.join(problems)}); activations.experts.dispatch needs its own case")
        moe_block = _resolve(blocks[layer], block_path) if block_path else blocks[layer]
        if spec.shared is not None:
            shared = _resolve(blocks[layer], spec.shared)
            sites.append(NeuronSite(layer, SHARED_TEMPLATE.format(layer=layer), shared, int(shared.in_features),
                                    moe_block))
        n_experts, _, d_expert = experts.down_proj.shape
        sites += [NeuronSite(layer, EXPERT_TEMPLATE.format(layer=layer, expert=expert), experts, int(d_expert),
                             moe_block, expert) for expert in range(n_experts)]
    return sites


def dispatch(experts: nn.Module, hidden_states: Tensor, top_k_index: Tensor, top_k_weights: Tensor) -> Tensor:
    """transformers' eager experts loop, with each hooked expert's neuron rows passed through its hooks."""
    hooks: list[tuple[int, RowFn]] = experts.__dict__[_FNS]
    hooked_experts = {expert for expert, _ in hooks}
    out = torch.zeros_like(hidden_states)
    for expert in range(experts.gate_up_proj.shape[0]):
        # (top_k, tokens) then where(): the same token order as the eager loop, so sums round alike.
        top_k_pos, token_idx = torch.where((top_k_index == expert).T)
        if len(token_idx) == 0 and expert not in hooked_experts:
            continue
        gate, up = F.linear(hidden_states[token_idx], experts.gate_up_proj[expert]).chunk(2, dim=-1)
        neurons = experts.act_fn(gate) * up
        if expert in hooked_experts:
            neurons = _through_hooks(expert, hooks, neurons, token_idx, len(hidden_states))
        rows = F.linear(neurons, experts.down_proj[expert]) * top_k_weights[token_idx, top_k_pos, None]
        out.index_add_(0, token_idx, rows.to(out.dtype))
    return out


def _through_hooks(expert: int, hooks: list[tuple[int, RowFn]], neurons: Tensor, token_idx: Tensor,
                   n_tokens: int) -> Tensor:
    dense = neurons.new_full((n_tokens, neurons.shape[-1]), float("nan")).index_copy(0, token_idx, neurons)
    for hooked_expert, fn in hooks:
        if hooked_expert == expert:
            replaced = fn(dense)
            dense = dense if replaced is None else replaced
    edited = dense[token_idx]
    if bool(edited.isnan().any()) and not bool(neurons.isnan().any()):
        raise ValueError(f"an intervention on expert {expert} set NaN at tokens routed to it: patch values recorded "
                         "where the donor's router did not send those tokens to this expert are undefined; patch "
                         "per-neuron constants, or only prompts whose routing matches")
    return edited


class _ExpertHook:
    """A removable registration of one ``(expert, fn)`` on an experts module (like a hook handle)."""

    def __init__(self, experts: nn.Module, entry: tuple[int, RowFn]) -> None:
        self.experts, self.entry = experts, entry

    def remove(self) -> None:
        hooks = self.experts.__dict__.get(_FNS, [])
        if any(entry is self.entry for entry in hooks):
            hooks[:] = [entry for entry in hooks if entry is not self.entry]
        if not hooks and _FNS in self.experts.__dict__:
            # The last hook gone: the module's own forward (and its fast kernels) is back.
            del self.experts.__dict__[_FNS]
            del self.experts.forward


def hook_expert(site: NeuronSite, fn: RowFn) -> _ExpertHook:
    """Run ``fn`` on expert ``site.expert``'s neuron rows until the returned handle is removed."""
    experts = site.module
    if _FNS not in experts.__dict__:
        experts.__dict__[_FNS] = []
        experts.forward = MethodType(dispatch, experts)
    entry = (int(site.expert), fn)
    experts.__dict__[_FNS].append(entry)
    return _ExpertHook(experts, entry)


def is_hooked(experts: nn.Module) -> bool:
    return _FNS in experts.__dict__
