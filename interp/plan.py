"""Pre-flight planner: each stage's peak memory, disk and time, from a model's config alone.

Nothing here loads weights or imports torch: a plan reads a config (a built-in shape, the default
model's name, a model folder, a ``config.json`` or a peft adapter folder pointing at one) and counts.

1. Shape: parameters from the config's sizes (embeddings, attention with grouped KV heads, a gated
   or plain MLP, norms), neurons = layers x MLP width, bytes per weight from the dtype.
2. Memory per stage = the process's own footprint (``RUNTIME_MB``: python, torch, transformers and
   the project, measured) + what the stage holds: the weights (every stage but the diff), one batch
   of neuron vectors for all layers, the streaming statistics (moments and a 51-bin histogram per
   neuron, held about three times while a batch merges), the largest weight tensor (copied once
   while the weights fingerprint is hashed), and for attribution the autograd graph of one chunk.
3. Disk: per-prompt reductions (float32, one value per neuron and reduction), the statistics, and
   with ``store_tokens`` every token (float16), uncompressed: an upper bound, since the cache is
   LZF-compressed (the NaN reductions of prompts without marks shrink to almost nothing); an
   export writes the weights once.
4. Time: forward FLOPs (2 per weight per token, plus attention over the context) divided by a
   throughput measured on the device kind (``THROUGHPUT``), plus a per-neuron-per-token cost for the
   reductions and a fixed cost per layer and batch; attribution is one forward and one backward (about 3 forwards), and the proxy runs a
   stacked copy per neuron set. Throughputs come from ``bench/bench_7b_cpu.py``; a device kind
   without a measurement says so in the plan.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from activations.config import DEFAULT_REDUCTIONS, EMBEDDED_NAME
from activations.shapes import SHAPES

MB = 2**20
RUNTIME_MB = 530.0
"""RSS of a process that has imported torch, transformers and the project and built a tokenizer
(``bench/bench_7b_cpu.py``: 527 MB before any model is built, 2-core CPU machine)."""
HIST_BINS = 51
"""|a| histogram bins per neuron (``activations.running.N_ABS_BINS``) plus one for the count row."""
STATS_BYTES_PER_NEURON = 8 * (HIST_BINS + 9)
"""Histogram (int64) and nine float64 moments/maxima per neuron (``activations.running.TokenStats``)."""
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

THROUGHPUT: dict[str, dict[str, float]] = {
    "cpu": {"flops": 50e9, "neuron_tokens": 6e6, "diff_values": 4.5e6, "layer_pass": 0.5, "disk": 150e6, "hash": 400e6, "measured": 1.0},
    "cuda": {"flops": 200e12, "neuron_tokens": 20e9, "diff_values": 4.5e6, "layer_pass": 0.002, "disk": 1e9, "hash": 1e9, "measured": 0.0},
}
"""Per device kind: effective FLOP/s of a bf16 forward; neuron-token values reduced per second
(reductions + statistics); per-prompt neuron values the diff tests per second (7B: 3.2 s for 2 x 16
prompts x 458,752 neurons); seconds of fixed cost per layer and batch (hooks, reductions, numpy
copies: what dominates small models); bytes/s written; bytes/s hashed (the weights fingerprint).
``cpu``: fitted to ``bench/bench_7b_cpu.py`` at the 135M and Mistral-7B shapes on the 2-core machine
(reductions alone: 10.1 s per 8-prompt batch at 135M, 27.3 s at 7B), which was shared with other
work and varied in speed several-fold, so CPU times are good to about 2x. ``cuda``: not measured
(no GPU lent so far), a guess for an H100-class card that ``bench/gpu_check.py`` will replace."""


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know about a model."""

    name: str
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    tied: bool
    gated: bool = True
    """A gated MLP (gate, up, down) as in Llama/Mistral; False for GPT-2's fc/proj."""

    def __post_init__(self) -> None:
        if min(self.n_layers, self.d_model, self.d_mlp, self.n_heads, self.n_kv_heads, self.vocab) < 1:
            raise ValueError(f"model shape {self} has a size below 1; check its config.json")

    @property
    def neurons(self) -> int:
        return self.n_layers * self.d_mlp

    @property
    def params(self) -> int:
        head = self.d_model // self.n_heads
        attention = self.d_model * head * (2 * self.n_heads + 2 * self.n_kv_heads)
        mlp = (3 if self.gated else 2) * self.d_model * self.d_mlp
        per_layer = attention + mlp + 2 * self.d_model
        embeddings = self.vocab * self.d_model * (1 if self.tied else 2)
        return self.n_layers * per_layer + embeddings + self.d_model

    @property
    def largest_tensor(self) -> int:
        return max(self.vocab * self.d_model, self.d_model * self.d_mlp)


def shape_from_config(config: dict, name: str) -> ModelShape:
    """A ``ModelShape`` from transformers config fields (Llama/Mistral/Qwen names, or GPT-2's)."""
    get = lambda *keys, default=None: next((config[k] for k in keys if config.get(k) is not None), default)  # noqa: E731
    d_model = get("hidden_size", "n_embd")
    if d_model is None:
        raise ValueError(f"config of {name!r} has no hidden_size (or n_embd); is it a causal LM config.json?")
    n_heads = get("num_attention_heads", "n_head")
    return ModelShape(name, get("num_hidden_layers", "n_layer"), d_model, get("intermediate_size", "n_inner") or 4 * d_model,
                      n_heads, get("num_key_value_heads", default=n_heads), get("vocab_size"),
                      bool(get("tie_word_embeddings", default=True)), gated="intermediate_size" in config)


def load_shape(spec: str) -> ModelShape:
    """A built-in shape name, the default model, a model or adapter folder, or a config.json."""
    if spec == EMBEDDED_NAME:
        spec = "smollm2-135m"
    if spec in SHAPES:
        return shape_from_config(dict(SHAPES[spec]), spec)
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{path}/adapter_config.json names no base model; plan the base model's folder")
        return load_shape(base)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return shape_from_config(json.loads(path.read_text()), spec)
    raise ValueError(f"cannot plan {spec!r}: pass a shape ({', '.join(SHAPES)}), {EMBEDDED_NAME!r}, a model folder "
                     "or its config.json (a hub id: download its config.json and pass the file)")


@dataclass(frozen=True)
class PlanConfig:
    """The study a plan is for."""

    prompts: int = 240
    """Prompts captured per model."""
    tokens_per_prompt: int = 40
    """Mean tokens per prompt, template included."""
    batch_size: int = 16
    """Prompts per forward pass (``CaptureConfig.batch_size``)."""
    store_tokens: bool = False
    """Keep every token's activations (float16) as ``interp cache --store-tokens`` does."""
    dtype: str = "bfloat16"
    """Weights' dtype: float32, bfloat16 or float16."""
    device: str = "cpu"
    """``cpu`` or ``cuda`` (the throughputs of ``THROUGHPUT``)."""
    contexts: int = 32
    """Writing contexts of the attribution screen and the proxy."""
    context_tokens: int = 120
    """Mean tokens per writing context."""
    proxy_sets: int = 100
    """Neuron sets the proxy measures (screen shortlist, dose-response, random sets)."""

    def __post_init__(self) -> None:
        if min(self.prompts, self.tokens_per_prompt, self.batch_size, self.contexts, self.context_tokens) < 1:
            raise ValueError("prompts, tokens per prompt, batch size, contexts and context tokens must be at least 1")
        if self.proxy_sets < 0:
            raise ValueError(f"proxy_sets must be 0 or more, got {self.proxy_sets}")
        if self.dtype not in BYTES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(BYTES)}")
        if self.device.split(":")[0] not in THROUGHPUT:
            raise ValueError(f"unknown device {self.device!r}; choose cpu or cuda")


@dataclass(frozen=True)
class StageEstimate:
    """One stage's estimate."""

    stage: str
    peak_mb: float
    """Peak resident memory of the process (host RAM on cpu; device memory on cuda, weights included)."""
    disk_mb: float
    seconds: float
    note: str = ""


@dataclass(frozen=True)
class Plan:
    """Every stage's estimate for one model and one study."""

    shape: ModelShape
    config: PlanConfig
    stages: tuple[StageEstimate, ...]
    time_measured: bool = field(default=True)
    """False when the device kind's throughput is a guess (no measurement on that kind yet)."""

    @property
    def peak_mb(self) -> float:
        return max(stage.peak_mb for stage in self.stages)

    def stage(self, name: str) -> StageEstimate:
        return next(s for s in self.stages if s.stage == name)

    def table(self) -> str:
        lines = [f"{self.shape.name}: {self.shape.params / 1e9:.2f}B parameters, {self.shape.n_layers} x "
                 f"{self.shape.d_mlp:,} = {self.shape.neurons:,} neurons, {self.config.dtype} on {self.config.device}",
                 f"{'stage':<14}{'peak memory':>14}{'disk':>12}{'time':>12}"]
        for s in self.stages:
            lines.append(f"{s.stage:<14}{_size(s.peak_mb):>14}{_size(s.disk_mb):>12}{_duration(s.seconds):>12}  {s.note}")
        if not self.time_measured:
            lines.append(f"times on {self.config.device} are guesses: no throughput measured there yet (bench/gpu_check.py)")
        return "\n".join(lines)


def _size(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def plan(shape: ModelShape, config: PlanConfig = PlanConfig()) -> Plan:
    """The estimates of the module docstring for ``shape`` under ``config``."""
    rate = THROUGHPUT[config.device.split(":")[0]]
    width = BYTES[config.dtype]
    weights = shape.params * width / MB
    runtime = RUNTIME_MB if config.device == "cpu" else 0.0
    flops_token = 2 * (shape.params - shape.vocab * shape.d_model * (1 if shape.tied else 2))
    attention = lambda tokens: 4 * shape.n_layers * shape.d_model * tokens  # noqa: E731  per token, causal mean
    head_flops = 2 * shape.vocab * shape.d_model
    n_tokens = config.prompts * config.tokens_per_prompt
    batch_tokens = config.batch_size * config.tokens_per_prompt
    stats = STATS_BYTES_PER_NEURON * shape.neurons / MB
    acts = batch_tokens * shape.neurons * width / MB
    reductions = len(DEFAULT_REDUCTIONS) * shape.neurons * 4 / MB
    hashing = shape.params * width / rate["hash"]
    capture_disk = config.prompts * reductions + stats + (n_tokens * shape.neurons * 2 / MB if config.store_tokens else 0)
    n_batches = -(-config.prompts // config.batch_size)
    capture_seconds = (n_tokens * (flops_token + attention(config.tokens_per_prompt / 2)) / rate["flops"]
                       + n_tokens * shape.neurons / rate["neuron_tokens"] + n_batches * shape.n_layers * rate["layer_pass"]
                       + hashing)
    capture = StageEstimate("capture", runtime + weights + 3 * stats + 2 * acts + config.batch_size * reductions
                            + shape.largest_tensor * width / MB, capture_disk, capture_seconds, "per model")
    # one reduction of both caches (float32) and a neuron table of ~100 float64 columns; not checked
    # apart: the bench's diff ran in a process already holding more (7B, 16 prompts: +49 MB)
    diff = StageEstimate("diff", runtime + 2 * config.prompts * shape.neurons * 4 / MB + shape.neurons * 800 / MB, 0.0,
                         2 * config.prompts * shape.neurons / rate["diff_values"], "both caches, no model (numpy, on the CPU)")
    chunk_tokens = min(8, config.contexts) * config.context_tokens
    context_tokens = config.contexts * config.context_tokens
    graph = chunk_tokens * shape.n_layers * (4 * shape.d_mlp + 10 * shape.d_model) * width / MB
    donor = context_tokens * shape.neurons * width / MB
    logits = chunk_tokens * shape.vocab * 4 * 2 / MB
    per_forward = flops_token + head_flops + attention(config.context_tokens / 2)
    attribution = StageEstimate("attribution", runtime + weights + graph + donor + 2 * chunk_tokens * shape.neurons * width / MB
                                + logits, 0.0, 3 * context_tokens * per_forward / rate["flops"]
                                + -(-config.contexts // 8) * shape.n_layers * 0.3 * rate["layer_pass"], "every neuron")
    copies = 8  # stacked copies per pass (ScreenConfig.max_copies); no graph, one layer's values at a time
    clean_blocks = 1.5 * context_tokens * shape.n_layers * shape.d_model * width / MB  # contexts + neutral chats
    pass_tokens = copies * min(8, config.contexts) * config.context_tokens
    proxy = StageEstimate("proxy", runtime + weights + donor + clean_blocks
                          + pass_tokens * (4 * shape.d_mlp * width + 2 * shape.vocab * 4) / MB,
                          0.0, config.proxy_sets * 1.5 * context_tokens * per_forward / rate["flops"] / 2,
                          f"{config.proxy_sets} sets, passes resumed at the edited layer")
    export = StageEstimate("export", runtime + weights + 2 * shape.d_model * shape.d_mlp * width / MB * shape.n_layers / 4,
                           weights, weights * MB / rate["disk"] + 2 * hashing, "mean-ablation copy (shares unedited weights)")
    return Plan(shape, config, (capture, diff, attribution, proxy, export), bool(rate["measured"]))


def available_mb() -> float:
    """Memory this process could still take: MemAvailable on Linux, else physical memory."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB


def check_fits(estimate: Plan | StageEstimate, available: float | None = None, *, margin: float = 0.9) -> str | None:
    """None when the estimate's peak fits in ``margin`` x the available memory (MB; default this
    machine's), else a one-line message that names the shortfall and the ways out."""
    peak = estimate.peak_mb
    available = available_mb() if available is None else available
    if peak <= margin * available:
        return None
    name = estimate.stage if isinstance(estimate, StageEstimate) else "the study"
    return (f"{name} needs about {_size(peak)} but this machine has {_size(available)} available; use a smaller "
            "--batch-size, load in bfloat16, split the model over devices (device_map), or run on a larger machine "
            "(see `interp plan`)")


def preflight(spec: str, *, prompts: int, batch_size: int = 16, store_tokens: bool = False, dtype: str = "float32",
              device: str = "cpu", stage: str = "capture", available: float | None = None) -> str | None:
    """The refusal message when ``stage`` of a study on ``spec`` would not fit this machine's memory,
    else None (also None where the plan cannot apply: a spec without a readable config, or a device
    other than the CPU, whose memory this process cannot see without loading torch)."""
    if not device.startswith("cpu"):
        return None
    try:
        shape = load_shape(spec)
    except (ValueError, OSError, json.JSONDecodeError, TypeError):
        return None  # hub ids and in-memory test models: nothing to read a config from here
    estimate = plan(shape, PlanConfig(prompts=prompts, batch_size=batch_size, store_tokens=store_tokens, dtype=dtype,
                                      device="cpu")).stage(stage)
    return check_fits(estimate, available)
