"""Benchmark: a study's stages on a randomly initialised model of a real shape, stage by stage (not a test).

    nice -n 10 .venv/bin/python bench/bench_7b_cpu.py --shape mistral-7b --prompts 24 --out reports/scaling/mistral-7b.json
    .venv/bin/python bench/bench_7b_cpu.py --shape smollm2-135m --prompts 24 --out /tmp/135m.json

1. Build the model on the meta device and fill it in place (``activations.random_models``; bf16
   by default), so a 7B model never holds a float32 copy.
2. Stages, each timed (wall clock) with its peak RSS (``VmHWM``, reset before each stage through
   ``/proc/self/clear_refs``; the weights are resident throughout, so each peak includes them):
   ``capture_base``      every neuron of every layer on ``--prompts`` prompts (raw template, ~32
                         tokens each) into HDF5, with the streaming statistics (what ``interp cache`` runs);
   ``stats``             the reductions and streaming statistics of one batch alone (no forward);
   ``capture_tuned``     the same on the "fine-tune": the same weights with seeded noise (5% of each
                         weight's std) on every MLP up projection, made in place, because two 7B
                         models do not fit in 24 GB together and timing does not depend on the fine-tune;
   ``diff``              ``interp.diff`` of the two captures (every neuron: tests, FDR, classes, outliers);
   ``proxy_suite``       the clean passes of the causal proxy (writing contexts and neutral chats);
   ``attribution``       the screen's attribution patching of every neuron (one forward + backward per
                         chunk; base values recorded before the perturbation);
   ``proxy``             a short proxy sweep: ``--sets`` random sets of 30 neurons mean-ablated (stacked copies);
   ``export``            a mean-ablation-folded copy of the model written as a HF folder (then deleted).
3. The planner's estimate of each stage (``interp.plan``) is stored beside the measurement.

Prompts are texts of the built-in neutral set whose raw tokens all fall inside the shape's
vocabulary (a 7B shape has 32,000 ids, the project's tokenizer 49,152), joined three to a prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from activations import load_model
from activations.backends import open_backend
from activations.capture import capture, pad_batch
from activations.config import DEFAULT_REDUCTIONS
from activations.prompt_sets import PromptSet, load_prompt_set
from activations.random_models import random_model, shape_config
from activations.reduce import reduce_batch
from activations.roles import encode_prompt_set
from activations.sites import neuron_sites
from interp.causal.inputs import TokenBatch
from interp.causal.proxy import build_proxy_suite, measure_sets
from interp.causal.screen import attribution
from interp.interventions import NeuronSet
from interp.interventions.references import record_neurons
from interp.interventions.export import export_suppressed
from interp.api import diff


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


class Stages:
    """Per-stage wall time and peak RSS of this process."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    @contextmanager
    def stage(self, name: str, **extra: object) -> Iterator[dict[str, object]]:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        row: dict[str, object] = {"stage": name, "rss_before_mb": round(_status_mb("VmRSS"))}
        start = time.perf_counter()
        yield row
        row["seconds"] = round(time.perf_counter() - start, 2)
        row["peak_rss_mb"] = round(_status_mb("VmHWM"))
        row.update(extra)
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def bench_texts(tokenizer, vocab_size: int, n: int, join: int = 3) -> list[str]:
    """``n`` prompts of ``join`` neutral texts each whose raw tokens are all below ``vocab_size``
    (checked on the joined text: joining can merge tokens across the seams)."""
    texts = load_prompt_set("neutral").texts
    found: list[str] = []
    for start in range(len(texts) * join):
        text = " ".join(texts[(start + k) % len(texts)] for k in range(join))
        if max(tokenizer(text, add_special_tokens=False)["input_ids"]) < vocab_size:
            found.append(text)
        if len(found) == n:
            return found
    raise ValueError(f"only {len(found)} joined neutral texts tokenise inside a vocabulary of {vocab_size}")


def token_batch(tokenizer, texts: list[str], name: str) -> TokenBatch:
    """Right-padded raw texts, scored at every real position but the last."""
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(map(len, encoded))
    ids = torch.full((len(texts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, : len(e)] = torch.tensor(e)
        mask[row, : len(e)] = 1
    score = mask.bool().clone()
    score[:, -1] = False
    return TokenBatch(ids, mask, score, tuple(f"{name}{i}" for i in range(len(texts))))


@torch.no_grad()
def perturb_up_projections(model: torch.nn.Module, scale: float = 0.05, seed: int = 1) -> None:
    """In place: seeded noise of ``scale`` x each up projection's std (the stand-in fine-tune)."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "up_proj" in name:
            noise = torch.empty_like(param).normal_(0.0, float(param.float().std()) * scale, generator=generator)
            param.add_(noise)


def run(shape: str, n_prompts: int, batch_size: int, n_contexts: int, n_sets: int, dtype: torch.dtype,
        workdir: Path, skip: set[str]) -> dict[str, object]:
    stages = Stages()
    tokenizer = load_model("tiny-random-llama").tokenizer  # the project's tokenizer; the tiny model is dropped
    config = shape_config(shape)
    with stages.stage("build") as row:
        model = random_model(config, dtype=dtype)
        row["params"] = sum(p.numel() for p in model.parameters())
    sites = neuron_sites(model)
    texts = bench_texts(tokenizer, config.vocab_size, n_prompts)
    contexts = token_batch(tokenizer, texts[:n_contexts], "c")
    neutral = token_batch(tokenizer, texts[n_contexts : n_contexts + max(2, n_contexts // 2)], "n")
    target_ids = torch.tensor(sorted({int(t) for t in contexts.input_ids[contexts.attention_mask.bool()][:4]}))
    n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    options = dict(template="raw", batch_size=batch_size, model_spec=shape)
    with stages.stage("capture_base", prompts=n_prompts, tokens=n_tokens):
        base_cache = capture(model, tokenizer, texts, workdir / "base.h5", **options)
    with stages.stage("stats", prompts=min(batch_size, n_prompts)) as row:
        encoded = encode_prompt_set(tokenizer, PromptSet.from_texts(texts), "raw")[:batch_size]
        batch, roles = pad_batch(encoded, tokenizer.pad_token_id, "right", torch.device("cpu"))
        with torch.inference_mode(), open_backend("native", model, tokenizer, sites) as run_batch:
            acts = run_batch(batch)
        start = time.perf_counter()
        reduce_batch(acts, roles, tuple(s.layer for s in sites), DEFAULT_REDUCTIONS)
        row["reduce_seconds"] = round(time.perf_counter() - start, 2)
        del acts
    chunk = max(1, min(4, n_contexts))
    with torch.no_grad():  # the base values the screen patches in, recorded before the "fine-tune"
        donor = {name: [record_neurons(model, c.input_ids, c.attention_mask) for c in batch.split(chunk)]
                 for name, batch in (("contexts", contexts), ("neutral", neutral))}
    perturb_up_projections(model)
    with stages.stage("capture_tuned", prompts=n_prompts, tokens=n_tokens):
        tuned_cache = capture(model, tokenizer, texts, workdir / "tuned.h5", **options)
    with stages.stage("diff", neurons=len(sites) * sites[0].d_mlp) as row:
        result = diff(base=base_cache, merged=tuned_cache)
        row["flagged"] = int(result.table["flagged"].sum())
    del result
    with stages.stage("proxy_suite", contexts=n_contexts, context_tokens=int(contexts.attention_mask.sum())):
        suite = build_proxy_suite(model, contexts, neutral, target_ids, batch_size=chunk)
        suite.donor_values = donor
    means = {layer: torch.cat([d[layer] for d in donor["contexts"]]).float().mean((0, 1)) for layer in donor["contexts"][0]}
    with stages.stage("attribution", neurons=len(sites) * sites[0].d_mlp, contexts=n_contexts):
        _, mean_estimates, _, _, seconds = attribution(model, suite, means)
    rng = np.random.default_rng(0)
    width = sites[0].d_mlp
    sets = [NeuronSet.from_pairs([(int(layer), int(i)) for layer, i in zip(rng.integers(len(sites) // 2, len(sites), 30),
                                                                            rng.integers(0, width, 30))])
            for _ in range(n_sets)]
    with stages.stage("proxy", sets=n_sets, neurons_per_set=30):
        measure_sets(model, suite, sets, "mean", means, max_copies=4)
    if "export" not in skip:
        order = np.argsort(mean_estimates, axis=None)[:30]
        top = NeuronSet.from_pairs([(sites[int(f // width)].layer, int(f % width)) for f in order])
        out = workdir / "suppressed"
        method = "mean" if hasattr(model.config, "mlp_bias") else "zero"  # Mistral has no MLP bias to fold means into
        with stages.stage("export", neurons=len(top), method=method) as row:
            export_suppressed(model, top, out, tokenizer=tokenizer, method=method, means=means, source_spec=shape)
            row["disk_mb"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20)
        shutil.rmtree(out, ignore_errors=True)
    for name in ("base.h5", "tuned.h5"):
        for row in stages.rows:
            if row["stage"] == f"capture_{name.removesuffix('.h5')}":
                row["disk_mb"] = round((workdir / name).stat().st_size / 2**20, 1)
    return {"shape": shape, "dtype": str(dtype).removeprefix("torch."), "prompts": n_prompts, "tokens": n_tokens,
            "batch_size": batch_size, "contexts": n_contexts, "neurons": len(sites) * width,
            "layers": len(sites), "d_mlp": width, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "stages": stages.rows}


def run_export(shape: str, dtype: torch.dtype, workdir: Path) -> dict[str, object]:
    """Build, then export a suppressed copy of 30 seeded neurons: the export stage alone."""
    stages = Stages()
    tokenizer = load_model("tiny-random-llama").tokenizer
    with stages.stage("build") as row:
        model = random_model(shape_config(shape), dtype=dtype)
        row["params"] = sum(p.numel() for p in model.parameters())
    sites = neuron_sites(model)
    rng = np.random.default_rng(0)
    top = NeuronSet.from_pairs([(sites[int(rng.integers(len(sites)))].layer, int(i))
                                for i in rng.choice(sites[0].d_mlp, 30, replace=False)])
    method = "mean" if hasattr(model.config, "mlp_bias") else "zero"
    means = {site.layer: torch.zeros(site.d_mlp) for site in sites}
    out = workdir / "suppressed"
    with stages.stage("export", neurons=len(top), method=method) as row:
        export_suppressed(model, top, out, tokenizer=tokenizer, method=method, means=means, source_spec=shape)
        row["disk_mb"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20)
    return {"shape": shape, "dtype": str(dtype).removeprefix("torch."), "stages": stages.rows}


def compare(result: dict) -> list[dict[str, object]]:
    """The planner's peak memory for each measured stage beside the measurement (``interp.plan``)."""
    from interp.plan import PlanConfig, load_shape, plan

    stages = {row["stage"]: row for row in result["stages"]}
    estimate = plan(load_shape(result["shape"]), PlanConfig(
        prompts=result["prompts"], tokens_per_prompt=max(1, round(result["tokens"] / result["prompts"])),
        batch_size=result["batch_size"], dtype=result["dtype"], contexts=result["contexts"],
        context_tokens=max(1, round(stages["proxy_suite"]["context_tokens"] / result["contexts"])), proxy_sets=2))
    rows = []
    for measured, planned in (("capture_base", "capture"), ("attribution", "attribution"), ("proxy", "proxy"),
                              ("export", "export")):
        if measured in stages:
            predicted = estimate.stage(planned)
            actual = stages[measured]["peak_rss_mb"]
            rows.append({"stage": planned, "predicted_peak_mb": round(predicted.peak_mb), "measured_peak_mb": actual,
                         "error": round(predicted.peak_mb / actual - 1, 3), "predicted_seconds": round(predicted.seconds, 1),
                         "measured_seconds": stages[measured]["seconds"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="mistral-7b", help="a shape of activations.shapes.SHAPES")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--contexts", type=int, default=8, help="writing contexts of the proxy and attribution")
    parser.add_argument("--sets", type=int, default=4, help="neuron sets of the short proxy sweep")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--skip", default="", help="comma-separated stages to skip (export)")
    parser.add_argument("--export-only", action="store_true", help="build the model and run the export stage alone")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench7b-", dir=os.environ.get("BENCH_TMP")) as folder:
        if args.export_only:
            result = run_export(args.shape, getattr(torch, args.dtype), Path(folder))
            print(json.dumps(result))
            if args.out:
                Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
            return
        result = run(args.shape, args.prompts, args.batch_size, args.contexts, args.sets, getattr(torch, args.dtype),
                     Path(folder), set(filter(None, args.skip.split(","))))
    result["plan"] = compare(result)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
