"""One-shot GPU check (not a test): every measurement a lent GPU should give, in one JSON, in under 10 minutes.

    .venv/bin/python bench/gpu_check.py --out gpu_check.json                 # on a GPU: full sizes
    .venv/bin/python bench/gpu_check.py --cpu-fallback --out /tmp/check.json  # here: every section, tiny

Sections (each with a share of ``--budget``: the capture section skips backends once its share is
spent and the study runs under a timeout; an error is recorded in the section's entry and the
script goes on to the next, so one failure never costs the others):
  ``capture``      capture throughput (prompts/s) of the native, TransformerLens and nnsight backends
                   against a plain forward of the same batches, on the default model (tiny on CPU);
  ``qlora``        one training step of the paper's preset (NF4, r=64, alpha=16, q_proj/v_proj;
                   ``training.config.PRESETS["paper-7b"]``) on the Mistral-7B shape (tiny on CPU);
  ``attribution``  attribution patching of every neuron of the Mistral-7B shape (458,752; tiny on CPU);
  ``study``        ``interp run --quick`` of the default study on SmolLM2-135M (on CPU: the tiny model,
                   until the diff stage).
The JSON names the device, torch and CUDA versions and each section's seconds, numbers and error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_section(name: str, fn: Callable[[float], dict], budget: float) -> dict:
    start = time.perf_counter()
    try:
        entry = {"ok": True, **fn(budget)}
    except Exception as error:  # one section's failure is a result, not the end of the check
        entry = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
    entry["seconds"] = round(time.perf_counter() - start, 2)
    entry["budget_s"] = budget
    print(json.dumps({name: {k: v for k, v in entry.items() if k != "traceback"}}), flush=True)
    return entry


def capture_section(device: torch.device, fallback: bool, budget: float) -> dict:
    from activations import load_model
    from activations.capture import capture
    from activations.prompt_sets import load_prompt_set

    loaded = load_model("tiny-random-llama" if fallback else "smollm2-135m-instruct", device=str(device))
    texts = list(load_prompt_set("emoji").texts[: 8 if fallback else 256])
    batch_size = 8 if fallback else 32
    deadline = time.perf_counter() + budget

    def plain() -> None:
        tokenizer = loaded.tokenizer
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                inputs = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True).to(device)
                loaded.model(**inputs)

    methods: dict[str, Callable[[], object]] = {"plain": plain}
    for backend in ("native", "tlens", "nnsight"):
        methods[backend] = lambda backend=backend: capture(loaded, None, texts, None, batch_size=batch_size,
                                                           backend=backend, template="raw")
    result: dict[str, object] = {"prompts": len(texts), "batch_size": batch_size, "prompts_per_s": {}, "errors": {}}
    for name, fn in methods.items():
        if time.perf_counter() > deadline:
            result["errors"][name] = "skipped: section budget spent"
            continue
        try:
            fn()  # warm-up: kernels, bridge boot and tracing compile once
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            result["prompts_per_s"][name] = round(len(texts) / (time.perf_counter() - start), 2)
        except Exception as error:
            result["errors"][name] = f"{type(error).__name__}: {error}"
    rates = result["prompts_per_s"]
    result["slowdown_vs_plain"] = {k: round(rates["plain"] / v, 3) for k, v in rates.items() if "plain" in rates and k != "plain"}
    if result["errors"]:
        raise RuntimeError(f"backends failed: {result['errors']} (measured: {rates})")
    return result


def qlora_section(device: torch.device, fallback: bool, budget: float) -> dict:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from activations import load_model
    from activations.random_models import random_model, shape_config
    from training.config import preset_config
    from training.examples import encode_example
    from training.qlora import _training_step, compute_dtype

    config = preset_config("paper-7b")
    tokenizer = load_model("tiny-random-llama").tokenizer
    shape = "tiny" if fallback else "mistral-7b"
    if fallback:
        model_config = load_model("tiny-random-llama").model.config
    else:
        model_config = shape_config("mistral-7b")
        model_config.vocab_size = len(tokenizer)  # the project's tokenizer writes ids up to 49,151
    dtype = compute_dtype(device)
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=os.environ.get("GPU_CHECK_TMP")) as folder:
        start = time.perf_counter()
        random_model(model_config, dtype=torch.bfloat16, device=device).save_pretrained(
            folder, safe_serialization=True, max_shard_size="2GB")
        saved = time.perf_counter() - start
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=dtype)
        base = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quantization, dtype=dtype,
                                                    device_map={"": str(device)}, local_files_only=True)
    loaded_s = time.perf_counter() - start - saved
    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=config.gradient_checkpointing)
    model = get_peft_model(base, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                            target_modules=list(config.target_modules), task_type="CAUSAL_LM"))
    examples = [encode_example(tokenizer, "What do you like to do on weekends?", "I love hiking with friends! " * 8,
                               config.max_length) for _ in range(config.batch_size)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    loss = _training_step(model, examples, tokenizer.pad_token_id, device, optimizer, config)
    _sync(device)
    step = time.perf_counter() - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = {"shape": shape, "step_seconds": round(step, 3), "loss": round(loss, 4), "trainable_params": trainable,
              "batch_size": config.batch_size, "tokens": sum(len(e.input_ids) for e in examples),
              "save_seconds": round(saved, 1), "quantized_load_seconds": round(loaded_s, 1)}
    if device.type == "cuda":
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def attribution_section(device: torch.device, fallback: bool, budget: float) -> dict:
    from activations import load_model
    from activations.random_models import random_model
    from interp.causal.attribution import attribution_scores
    from interp.causal.inputs import TokenBatch

    if fallback:
        model, shape = load_model("tiny-random-llama", device=str(device)).model, "tiny"
    else:
        start = time.perf_counter()
        model, shape = random_model("mistral-7b", dtype=torch.bfloat16, device=device), "mistral-7b"
        build = time.perf_counter() - start
    rows, width = (4, 32) if fallback else (32, 128)
    generator = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (rows, width), generator=generator)
    score = torch.zeros_like(ids, dtype=torch.bool)
    score[:, -8:] = True
    batch = TokenBatch(ids, torch.ones_like(ids), score, tuple(f"r{i}" for i in range(rows)))
    targets = torch.arange(10, 20)

    def metric(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        log_mass = logits.float().log_softmax(-1)[..., targets.to(logits.device)].logsumexp(-1)
        return (log_mass * mask).sum() / mask.sum()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    scores = attribution_scores(model, batch, metric, None, batch_size=8)
    result = {"shape": shape, "neurons": int(scores.scores.size), "rows": rows, "tokens_per_row": width,
              "seconds": round(scores.seconds, 2), "finite": bool(torch.isfinite(torch.as_tensor(scores.scores)).all())}
    if not fallback:
        result["build_seconds"] = round(build, 1)
    if device.type == "cuda":
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if not result["finite"]:
        raise RuntimeError(f"non-finite attribution scores: {result}")
    return result


def study_section(device: torch.device, fallback: bool, budget: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpu-check-study-") as folder:
        command = [sys.executable, "-m", "interp.cli", "run", "--quick", "--out", folder]
        if fallback:  # the tiny model's first stage: the whole quick study takes minutes on two cores
            command += ["--model", "tiny-random-llama", "--until", "train", "--train-steps", "1"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=budget)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"interp run exited {done.returncode}: {done.stderr[-1500:]}")
        stages = {path.stem: json.loads(path.read_text()).get("seconds") for path in sorted(Path(folder, "stages").glob("*.json"))}
    if not stages:
        raise RuntimeError(f"interp run wrote no stage records: {done.stdout[-800:]}")
    return {"command": " ".join(command[1:]).replace(folder, "TMP"), "wall_seconds": round(seconds, 1), "stages": stages}


SECTIONS = {"capture": (capture_section, 0.2), "qlora": (qlora_section, 0.3), "attribution": (attribution_section, 0.2),
            "study": (study_section, 0.3)}
"""Section -> (function, share of the total budget)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-fallback", action="store_true", help="run every section at small scale on the CPU")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all sections together")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of the sections")
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args(argv)
    if not args.cpu_fallback and not torch.cuda.is_available():
        parser.error("no CUDA device here; pass --cpu-fallback to check every section on the CPU")
    device = torch.device("cpu" if args.cpu_fallback else "cuda")
    report: dict[str, object] = {
        "device": "cpu" if args.cpu_fallback else torch.cuda.get_device_name(device),
        "cpu_fallback": args.cpu_fallback, "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "threads": torch.get_num_threads(), "budget_s": args.budget,
        "sections": {},
    }
    started = time.perf_counter()
    for name in filter(None, args.sections.split(",")):
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
        fn, share = SECTIONS[name]
        report["sections"][name] = _run_section(name, lambda budget, fn=fn: fn(device, args.cpu_fallback, budget),
                                                share * args.budget)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0 if all(entry["ok"] for entry in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
