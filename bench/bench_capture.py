"""Benchmark activation capture on the default model (not a test; run by hand).

    .venv/bin/python bench/bench_capture.py [--batches 5] [--batch-size 16] [--rss-prompts 200,2000]

1. Timing: the same ``--batches`` batches of emoji prompts (user template) through a plain HF forward
   (sdpa, with LM head: what a user would run) and through one capture step per backend (tokenise,
   forward, reductions, HDF5 write), the methods taking turns batch by batch (see
   ``_interleaved_times``). One-off setup (bridge boot, nnsight wrap) is reported apart.
2. Memory: ``capture`` of N prompts (emoji texts repeated; default options, all layers) in a fresh
   subprocess per N. The peak RSS (VmHWM) is reset after the model load (whose own peak is far
   higher) and read after the capture. Bounded memory means it does not grow with N, although the
   file does. ``--rss-layers 0-3`` shortens it on a slow CPU (the forward stops at the last layer).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from activations import load_model, neuron_sites
from activations.backends import BACKENDS, open_backend
from activations.capture import CaptureConfig, _tokenize, capture, reduce_batch
from activations.prompt_sets import PromptSet, load_prompt_set
from activations.store import CacheLayout, CacheWriter, open_writer
from interp.commands.cache import parse_layers


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved_times(loaded, batches: list[list[str]], folder: Path) -> tuple[dict[str, list[float]], dict]:
    """Seconds per batch for each method, taking turns batch by batch.

    Shared CPUs here change speed several-fold within minutes; timing every method on batch i before
    any method sees batch i+1 exposes all of them to the same conditions. A capture step is what
    ``capture`` does per batch: template + tokenise, backend forward, reductions, HDF5 write.
    """
    model, tokenizer = loaded.model, loaded.tokenizer
    sites = neuron_sites(model)
    config = CaptureConfig(layers=tuple(site.layer for site in sites))
    n = len(batches) * len(batches[0])
    layout = CacheLayout(n, len(sites), sites[0].d_mlp, config.reductions, False, chunk_rows=len(batches[0]))
    ids = [f"p{i}" for i in range(n)]
    identity = {"capture_config": "bench", "prompt_set_hash": "bench", "weights_hash": "bench"}
    times: dict[str, list[float]] = {"plain": [], **{name: [] for name in BACKENDS}}
    setup: dict[str, float] = {}
    cpu = torch.device("cpu")

    def plain(texts: list[str]) -> None:
        batch = _tokenize(tokenizer, texts, "user", cpu)
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    def capture_step(run, writer, texts: list[str]) -> None:
        batch = _tokenize(tokenizer, texts, "user", cpu)
        mask = batch.attention_mask.bool()
        result = reduce_batch(run(batch), mask, config)
        writer.write_batch(result.reductions, mask.sum(1).numpy().astype(np.int32), result.stats)

    with ExitStack() as stack, torch.inference_mode():
        writers = {}
        for name in BACKENDS:
            writers[name] = open_writer(folder / f"{name}.h5", layout, identity, ids, ids, overwrite=True)
            stack.callback(writers[name].close)
        # The bridge works on its own copy, so it can stay open; native hooks and nnsight's
        # instrumentation sit on the shared model, so they are opened around their own steps only
        # (untimed) and the other methods run on a clean model.
        start = time.perf_counter()
        bridge = stack.enter_context(open_backend("tlens", model, tokenizer, sites))
        setup["tlens"] = time.perf_counter() - start
        order = ["plain", *BACKENDS]
        for round_, texts in enumerate(batches):
            for name in order[round_ % len(order):] + order[: round_ % len(order)]:  # rotate who goes first
                if name == "plain":
                    times[name].append(_timed(lambda: plain(texts)))
                    continue
                with ExitStack() as scope:
                    start = time.perf_counter()
                    run = bridge if name == "tlens" else scope.enter_context(open_backend(name, model, tokenizer, sites))
                    setup.setdefault(name, time.perf_counter() - start)
                    times[name].append(_timed(lambda: capture_step(run, writers[name], texts)))
    return {name: values[1:] for name, values in times.items()}, setup  # round 0 warms up


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _rss_child(n_prompts: int, out: str, layers: list[int] | None) -> None:
    loaded = load_model()
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emoji = load_prompt_set("emoji")
    texts = [emoji.texts[i % len(emoji)] for i in range(n_prompts)]
    prompts = PromptSet(f"emoji-x{n_prompts}", tuple(f"p{i:05d}" for i in range(n_prompts)), tuple(texts),
                        ("",) * n_prompts)
    after_batch: list[float] = []
    original = CacheWriter.write_batch

    def write_and_sample(self, *args, **kwargs):
        original(self, *args, **kwargs)
        after_batch.append(_status_mb("VmRSS"))

    CacheWriter.write_batch = write_and_sample
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM): loading peaks far higher
    before = _status_mb("VmRSS")
    start = time.perf_counter()
    capture(loaded, None, prompts, out, layers=layers, overwrite=True).close()
    seconds = time.perf_counter() - start
    sys.stdout.write(json.dumps({"load_peak_mb": load_peak, "before_mb": before, "peak_mb": _status_mb("VmHWM"),
                                 "first_batch_mb": after_batch[0], "last_batch_mb": after_batch[-1],
                                 "seconds": seconds, "file_mb": Path(out).stat().st_size / 2**20}) + "\n")


def _rss(n_prompts: int, folder: Path, layers: str) -> dict[str, float]:
    out = folder / f"rss{n_prompts}.h5"
    done = subprocess.run([sys.executable, __file__, "--rss-child", str(n_prompts), str(out), "--rss-layers", layers],
                          capture_output=True, text=True, check=True)
    out.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rss-prompts", default="200,2000")
    parser.add_argument("--rss-layers", default="",
                        help="layers for the memory runs, e.g. 0-3 to keep them short (default: all)")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(int(args.rss_child[0]), args.rss_child[1], parse_layers(args.rss_layers) if args.rss_layers else None)
        return
    loaded = load_model()
    emoji = load_prompt_set("emoji")
    n = (args.batches + 1) * args.batch_size  # one extra batch to warm up
    batches = [list(emoji.texts[i : i + args.batch_size]) for i in range(0, n, args.batch_size)]
    print(f"model smollm2-135m-instruct ({loaded.model.config._attn_implementation}), device cpu, "
          f"{torch.get_num_threads()} threads; {args.batches} batches x {args.batch_size} prompts, user template")
    with tempfile.TemporaryDirectory() as folder:
        times, setup = _interleaved_times(loaded, batches, Path(folder))
        print("seconds per batch, median (min-max)")
        for name, values in times.items():
            label = "plain HF forward" if name == "plain" else f"capture {name}"
            extra = f"   + {setup[name]:.1f} s one-off setup" if name in setup else ""
            print(f"  {label:<18} {statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f}){extra}")
        for top, bottom, target in (("native", "plain", "<= 1.10"), ("tlens", "native", ">= 1.3"),
                                    ("nnsight", "native", "")):
            ratios = [a / b for a, b in zip(times[top], times[bottom])]
            print(f"  {top} / {bottom}: {statistics.median(ratios):.2f} (median of per-batch ratios; "
                  f"{min(ratios):.2f}-{max(ratios):.2f})" + (f"   target {target}" if target else ""))
        print(f"memory: capture in a fresh process, layers {args.rss_layers or 'all'}, default options")
        for count in (int(c) for c in args.rss_prompts.split(",")):
            rss = _rss(count, Path(folder), args.rss_layers)
            print(f"  {count:>5} prompts: peak RSS during capture {rss['peak_mb']:5.0f} MB; RSS before "
                  f"{rss['before_mb']:.0f}, after batch 1 {rss['first_batch_mb']:.0f}, after the last batch "
                  f"{rss['last_batch_mb']:.0f} MB; file {rss['file_mb']:.0f} MB; {rss['seconds']:.0f} s")
        print(f"  (model-load peak, before the capture: {rss['load_peak_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
