"""Matmul precision: run a model's forwards (and backwards) in bfloat16 under autocast, or not.

``float32`` leaves everything as loaded. ``bfloat16`` wraps the work in ``torch.autocast``: weights
stay in their own dtype, matmuls run in bf16, norms and softmax stay in float32 (autocast's lists).
On hardware with native bf16 (CUDA GPUs with bf16; CPUs with AVX512-BF16 or AMX) this is about 1.6x
faster for this project's sampling and LoRA training on the 2-core CPU (``bench/bench_precision.py``);
elsewhere bf16 is emulated and slower, so ``auto`` resolves to bf16 only where it is native.
Results differ from float32's by rounding; every teacher-forced measurement of the project (proxy,
KL, perplexity, capability) stays in float32 so small differences between two models are not
rounding noise.
"""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path

import torch

from activations.config import check_precision


@functools.cache
def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to know, so no bf16
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bfloat16`` on a CUDA device with bf16 or a CPU with AVX512-BF16/AMX, else ``float32``."""
    check_precision(precision)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if device.type == "cpu" and _cpu_has_native_bf16() else "float32"


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to bf16 when ``precision`` resolves to ``bfloat16``, nothing for ``float32``. Autocast
    caches the cast of each weight that requires grad for the life of the context, so one context
    should span a whole decode."""
    if resolve_precision(precision, device) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
