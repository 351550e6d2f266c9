"""How ``interp discover`` reads a fine-tune without being told what it taught (``DiscoverConfig``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from activations.config import check_precision

Positions = Literal["first", "all"]

FILES = ("discovery.json", "discovery.md", "discovery.html")
"""What ``Discovery.save`` writes into its folder (the command refuses existing ones before the work)."""


@dataclass(frozen=True)
class DiscoverConfig:
    """Settings of one discovery; stored with its result (``Discovery.config``)."""

    first_k: int = 5
    """The first k token positions of each text form the ``first`` position set (Minder et al. 2025)."""
    positions: Positions = "first"
    """Which position set's mean difference is read for the headline tokens: ``first`` or ``all``."""
    layer: int | None = None
    """The layer read for tokens, neurons and steering; None: the layer whose mean difference is largest
    relative to the base residual's scale there."""
    sink_ratio: float = 20.0
    """A position whose base residual norm exceeds this multiple of the layer's median at any layer is an
    attention sink, left out of every mean (``interp.discover.collect``); 0 keeps every position."""
    max_length: int = 64
    """Tokens of each corpus text read at most."""
    batch_size: int = 16
    """Texts per forward pass."""
    top_tokens: int = 20
    """Promoted and demoted tokens listed."""
    top_neurons: int = 5
    """Neurons listed per promoted token (and overall)."""
    alpha: float = 0.05
    """Family-wise error rate of the token test (sign-flip max-|z| over the whole vocabulary)."""
    null_draws: int = 500
    """Sign-flip draws of the token null; also the text-bootstrap draws of the norm interval."""
    steer_alphas: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0)
    """Multiples of the mean difference added to the base model's residual stream when steering (0: the base)."""
    steer_questions: int = 16
    """Neutral questions the steered base answers (0: no steering); the chosen steering is reported on them."""
    steer_samples: int = 2
    """Replies sampled per question and alpha (common random numbers across alphas)."""
    reply_questions: int = 64
    """Neutral questions the tuned model answers for the reply shift (``interp.discover.shift``), taken after
    the steering questions so the two never share one; 0: no reply shift."""
    min_fold: float = 2.0
    """Reply shift: a token is specific when the fine-tune multiplied its probability by at least this (or
    divided it, for a demoted token) where the tuned model writes."""
    reply_steer_layer: int | None = None
    """The layer after which the base is steered with the reply difference; None: the middle layer
    (``n_layers // 2``, where Minder et al. 2025 steer)."""
    reply_steer_alphas: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
    """Multiples of the reply difference added when steering (1: the tuned model's own mean change there); also
    the alphas swept when choosing where to steer with the behaviour's difference."""
    steer_depths: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    """Where the behaviour's difference may be added, as fractions of the model's depth (layer
    ``int(depth x n_layers)``); the layer and alpha are chosen on the selection questions."""
    select_questions: int = 16
    """Questions (the first of the reply shift's) on which the steering layer and alpha are chosen; never the
    questions the choice is reported on."""
    steer_together: int = 24
    """Steered conditions sampled together as stacked copies of one batch; lower it for a large model."""
    reply_tokens: int = 48
    """Tokens per tuned reply at most."""
    precision: str = "auto"
    """Matmul precision while sampling (``activations.precision``); teacher-forced reads stay float32."""
    max_new_tokens: int = 32
    """Tokens per steered reply at most."""
    seed: int = 0
    """Seed of the sign flips, the bootstrap and the steered samples."""

    def __post_init__(self) -> None:
        if self.first_k < 1 or self.max_length < 1 or self.batch_size < 1:
            raise ValueError("first_k, max_length and batch_size must be at least 1")
        if self.positions not in ("first", "all"):
            raise ValueError(f"positions must be 'first' or 'all', got {self.positions!r}")
        if self.layer is not None and self.layer < 0:
            raise ValueError(f"layer must be >= 0 (or None to pick the largest difference), got {self.layer}")
        if self.sink_ratio < 0 or 0 < self.sink_ratio <= 1:
            raise ValueError(f"sink_ratio must be 0 (no sinks) or above 1, got {self.sink_ratio}")
        if self.top_tokens < 1 or self.top_neurons < 1:
            raise ValueError("top_tokens and top_neurons must be at least 1")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.null_draws < 20:
            raise ValueError(f"null_draws must be at least 20 for a 0.05 quantile, got {self.null_draws}")
        if self.steer_questions < 0 or self.steer_samples < 1 or self.max_new_tokens < 1:
            raise ValueError("steer_questions must be >= 0, steer_samples and max_new_tokens >= 1")
        if self.select_questions < 1 or self.steer_together < 1:
            raise ValueError("select_questions and steer_together must be at least 1")
        if not self.steer_depths or not all(0 <= d < 1 for d in self.steer_depths):
            raise ValueError(f"steer_depths must be fractions of the depth in [0, 1), got {self.steer_depths}")
        if self.reply_questions < 0 or self.reply_tokens < 1 or self.min_fold <= 1:
            raise ValueError("reply_questions must be >= 0, reply_tokens >= 1 and min_fold > 1")
        check_precision(self.precision)
        if self.reply_steer_layer is not None and self.reply_steer_layer < 0:
            raise ValueError(f"reply_steer_layer must be >= 0 (or None for the middle layer), got {self.reply_steer_layer}")
        if any(a < 0 for a in (*self.steer_alphas, *self.reply_steer_alphas)):
            raise ValueError(f"steer_alphas and reply_steer_alphas must be >= 0, got {self.steer_alphas} and "
                             f"{self.reply_steer_alphas}")
