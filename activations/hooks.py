"""Hooks on neuron sites, only ever inside context managers.

Every hook is a forward pre-hook on a site's output projection, so it sees (and may replace) the
neuron vector ``(batch, pos, d_mlp)`` on every forward call, including each step of ``generate``.
Where the projection sees flattened ``(batch * pos, d_mlp)`` rows (OPT, a Qwen2-MoE shared expert)
a pre-hook on the site's ``block`` notes the (batch, pos) shape first, and the hook gets the rows
reshaped to it and gives them back flat. An expert's site is hooked through
``activations.experts.hook_expert`` (the experts module has no per-expert projection).
Handles are removed in ``finally``: a model leaves a ``with`` block exactly as it entered, even
when the body raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from jaxtyping import Float
from torch import Tensor, nn

from activations.experts import hook_expert, is_hooked
from activations.sites import NeuronSite

NeuronFn = Callable[[Float[Tensor, "batch pos d_mlp"]], "Tensor | None"]
"""Receives a layer's neuron vector; returns a replacement, or None to leave it unchanged."""


@contextmanager
def hooked(hooks: Sequence[tuple[NeuronSite, NeuronFn]]) -> Iterator[None]:
    """Run each ``fn`` on its site's neuron vector during every forward pass inside the block."""
    handles = []
    shapes: dict[nn.Module, tuple[int, ...]] = {}  # block -> (batch, pos) of its latest input

    def wrap(fn: NeuronFn):
        def pre_hook(module, args):
            replaced = fn(args[0])
            return None if replaced is None else (replaced, *args[1:])

        return pre_hook

    def note_shape(block: nn.Module):
        def pre_hook(module, args, kwargs):
            hidden = args[0] if args else next(v for v in kwargs.values() if isinstance(v, Tensor))
            shapes[block] = tuple(hidden.shape[:-1])

        return pre_hook

    def unflatten(fn: NeuronFn, block: nn.Module) -> NeuronFn:
        def rows_fn(rows: Tensor) -> Tensor | None:
            lead = shapes[block]
            if len(lead) != 2 or rows.dim() != 2 or rows.shape[0] != lead[0] * lead[1]:
                raise RuntimeError(f"{type(block).__name__} passed {tuple(rows.shape)} to a flattened site after an "
                                   f"input of (batch, pos) = {lead}; the site's row in ARCHITECTURES is wrong")
            replaced = fn(rows.reshape(*lead, rows.shape[-1]))
            return None if replaced is None else replaced.reshape(rows.shape)

        return rows_fn

    try:
        for site, fn in hooks:
            if site.block is not None:
                if site.block not in shapes:
                    shapes[site.block] = ()
                    handles.append(site.block.register_forward_pre_hook(note_shape(site.block), with_kwargs=True))
                fn = unflatten(fn, site.block)
            if site.expert is not None:
                handles.append(hook_expert(site, fn))
            else:
                handles.append(site.module.register_forward_pre_hook(wrap(fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def recording(sites: Sequence[NeuronSite]) -> Iterator[dict[int | str, Float[Tensor, "batch pos d_mlp"]]]:
    """Yield a dict that holds, after each forward pass, every site's neuron vector by ``site.key``
    (the layer for a layer's MLP; the site name for an expert: NaN at tokens not routed to it).

    Tensors are detached references (no copy); a later forward pass replaces them.
    """
    latest: dict[int | str, Tensor] = {}

    def keep(key: int | str) -> NeuronFn:
        def fn(acts: Tensor) -> None:
            latest[key] = acts.detach()

        return fn

    with hooked([(site, keep(site.key)) for site in sites]):
        yield latest


def any_hooks(sites: Sequence[NeuronSite]) -> bool:
    """True if any site still carries a forward pre-hook (tests use it to prove clean exits)."""
    return any(len(site.module._forward_pre_hooks) > 0 or is_hooked(site.module)
               or (site.block is not None and len(site.block._forward_pre_hooks) > 0) for site in sites)
