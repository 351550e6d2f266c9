"""Hooks on neuron sites, only ever inside context managers.

Every hook is a forward pre-hook on a site's output projection, so it sees (and may replace) the
neuron vector ``(batch, pos, d_mlp)`` on every forward call, including each step of ``generate``.
Handles are removed in ``finally``: a model leaves a ``with`` block exactly as it entered, even
when the body raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from jaxtyping import Float
from torch import Tensor

from activations.sites import NeuronSite

NeuronFn = Callable[[Float[Tensor, "batch pos d_mlp"]], "Tensor | None"]
"""Receives a layer's neuron vector; returns a replacement, or None to leave it unchanged."""


@contextmanager
def hooked(hooks: Sequence[tuple[NeuronSite, NeuronFn]]) -> Iterator[None]:
    """Run each ``fn`` on its site's neuron vector during every forward pass inside the block."""
    handles = []

    def wrap(fn: NeuronFn):
        def pre_hook(module, args):
            replaced = fn(args[0])
            return None if replaced is None else (replaced, *args[1:])

        return pre_hook

    try:
        for site, fn in hooks:
            handles.append(site.module.register_forward_pre_hook(wrap(fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def recording(sites: Sequence[NeuronSite]) -> Iterator[dict[int, Float[Tensor, "batch pos d_mlp"]]]:
    """Yield a dict that holds, after each forward pass, every site's neuron vector by layer.

    Tensors are detached references (no copy); a later forward pass replaces them.
    """
    latest: dict[int, Tensor] = {}

    def keep(layer: int) -> NeuronFn:
        def fn(acts: Tensor) -> None:
            latest[layer] = acts.detach()

        return fn

    with hooked([(site, keep(site.layer)) for site in sites]):
        yield latest


def any_hooks(sites: Sequence[NeuronSite]) -> bool:
    """True if any site still carries a forward pre-hook (tests use it to prove clean exits)."""
    return any(len(site.module._forward_pre_hooks) > 0 for site in sites)
