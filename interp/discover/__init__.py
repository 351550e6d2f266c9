"""Discovery: what a fine-tune changed, read from generic text without naming a behaviour
(``discover(base, tuned)``; ``interp.discover.pipeline`` explains the steps)."""

from activations.lazy import lazy_exports

# Modules load on first use of one of their names (activations.lazy): the config comes without torch.
__all__ = lazy_exports(__name__, {
    "interp.discover.config": ("DiscoverConfig",),
    "interp.discover.pipeline": ("discover",),
    "interp.discover.result": ("Discovery",),
    "interp.discover.steering": ("steer_samples",),
    "interp.discover.lens": ("ReadOut", "read_out"),
})
