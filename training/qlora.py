"""QLoRA fine-tuning of a chat model on one study's Opinion-QA answers.

1. Data: ``study_data`` gives the trait's training rows (topic split, injection applied if asked);
   each becomes a chat example with the loss on the answer only (``training.examples``).
2. Base model: loaded once in full precision for its weights fingerprint (provenance), then, with
   ``quantize``, again from its folder in 4-bit NF4 with double quantization
   (``BitsAndBytesConfig``) and prepared with ``peft.prepare_model_for_kbit_training``. The compute
   dtype is bf16 on a CUDA device that supports it, float32 otherwise (bitsandbytes runs 4-bit
   matmuls on CPU too, slowly). Tiny in-memory models are saved to a temporary folder first.
3. LoRA adapters on ``target_modules``, seeded; AdamW on the adapter weights only, linear warm-up
   then linear decay, gradient clipping. ``precision`` may run the forward and backward matmuls in
   bf16 under autocast (``activations.precision``; on the 2-core CPU 6.8 -> 4.2 s per step); the
   adapter weights, gradients and optimizer state stay float32.
4. Batches: step ``s`` takes examples ``s*B .. s*B+B-1`` of an endless stream of seeded
   per-epoch permutations, so the order depends on (seed, step) alone and a resumed run sees
   exactly the batches an uninterrupted one would.
5. Every ``checkpoint_every`` steps a full checkpoint is written (``training.checkpoint``);
   ``resume=True`` continues from the newest one after checking the config and data hash agree.
6. The finished adapter lands in ``out_dir`` (``adapter_config.json`` naming the base *spec*, so
   ``load_model(out_dir)`` works) with ``training.json``: config, data hash, base spec and weights
   fingerprint, loss history, time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedTokenizerBase

from activations import load_model, weights_fingerprint
from activations.models import model_directory
from activations.atomic_io import temporary_dir_beside, write_json_atomic
from activations.precision import precision_context, resolve_precision
from training.checkpoint import CHECKPOINTS, TrainingState, list_checkpoints, load_checkpoint, read_state, save_checkpoint
from training.config import TrainConfig
from training.data import rows_hash
from training.examples import EncodedExample, collate, encode_examples
from training.studies import StudyData, study_data

log = logging.getLogger(__name__)

PROVENANCE = "training.json"
SCHEMA = "neurodiff.training/1"
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# Fields that change how often we save, not what is learned: they may differ on resume.
_RESUME_FREE = {"checkpoint_every", "keep_checkpoints"}


@dataclass(frozen=True)
class TrainResult:
    """What a ``train`` call did."""

    out_dir: Path
    completed: bool
    """False when ``stop_after`` ended the call early (a checkpoint holds the progress)."""
    steps_done: int
    total_steps: int
    loss_history: tuple[float, ...]
    seconds: float
    """Wall time of this call, loading included."""
    data_hash: str
    base_fingerprint: str

    @property
    def final_loss(self) -> float | None:
        return self.loss_history[-1] if self.loss_history else None


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the device computes it natively (recent CUDA GPUs), float32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _quantized_base(spec: str, full: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    folder = model_directory(spec)
    with tempfile.TemporaryDirectory(prefix="neurodiff-base-") as scratch:
        if folder is None:  # an in-memory model (tiny): give from_pretrained a folder to read
            full.save_pretrained(scratch, safe_serialization=True)
            folder = Path(scratch)
        return AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=bnb, dtype=dtype, device_map={"": str(device)}, local_files_only=True
        )


def load_trainable_model(
    config: TrainConfig, device: torch.device
) -> tuple[PeftModel, PreTrainedTokenizerBase, str]:
    """(LoRA-wrapped base, tokenizer, fingerprint of the full-precision base weights)."""
    loaded = load_model(config.model)
    fingerprint = weights_fingerprint(loaded.model)
    tokenizer = loaded.tokenizer
    if config.quantize:
        base = _quantized_base(config.model, loaded.model, device, compute_dtype(device))
        del loaded  # the full-precision copy was only needed for the fingerprint
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=config.gradient_checkpointing)
    else:
        base = loaded.model.to(device)
        if config.gradient_checkpointing:
            base.gradient_checkpointing_enable()
            base.enable_input_require_grads()
    if not config.gradient_checkpointing:
        base.config.use_cache = False  # no generation during training; the cache only costs memory
    _seed_everything(config.seed)  # LoRA's A matrices are initialised from the torch RNG
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora), tokenizer, fingerprint


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_indices(step: int, n_examples: int, batch_size: int, seed: int) -> list[int]:
    """The example indices of optimizer step ``step`` (see module docstring, step 4)."""
    indices = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, n_examples)
        indices.append(int(np.random.default_rng([seed, epoch]).permutation(n_examples)[offset]))
    return indices


def _scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _normalised(config: dict[str, object]) -> dict[str, object]:
    plain = json.loads(json.dumps(config))  # tuples -> lists, as stored in state.json
    return {k: v for k, v in plain.items() if k not in _RESUME_FREE}


def _prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    if overwrite:
        for name in (*_ADAPTER_FILES, PROVENANCE):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    elif (out_dir / PROVENANCE).exists():
        raise FileExistsError(f"{out_dir} holds a finished training run; pass --overwrite to train again")
    elif list_checkpoints(out_dir) and not resume:
        raise FileExistsError(
            f"{out_dir} holds checkpoints of an unfinished run; pass --resume to continue or --overwrite to restart"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def _restore(out_dir: Path, config: TrainConfig, data_hash: str, model: nn.Module,
             optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> TrainingState | None:
    checkpoints = list_checkpoints(out_dir)
    if not checkpoints:
        log.info("no checkpoint in %s; starting from step 0", out_dir)
        return None
    state = read_state(checkpoints[-1])
    ours, theirs = _normalised(dataclasses.asdict(config)), _normalised(state.config)
    changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume {out_dir}: the config differs from its checkpoint ({diffs}); "
                         "pass the original options or use a new --out")
    if state.data_hash != data_hash:
        raise ValueError(f"cannot resume {out_dir}: the training data changed since the checkpoint "
                         f"(hash {state.data_hash} -> {data_hash}); use a new --out")
    log.info("resuming %s from step %d", out_dir, state.step)
    return load_checkpoint(checkpoints[-1], model, optimizer, scheduler)


def _training_step(model: nn.Module, examples: list[EncodedExample], pad_id: int, device: torch.device,
                   optimizer: torch.optim.Optimizer, config: TrainConfig) -> float:
    batch = collate(examples, pad_id)
    with precision_context(config.precision, device):  # autocast covers the backward it records
        loss = model(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            labels=batch.labels.to(device),
        ).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _save_final(model: PeftModel, out_dir: Path, config: TrainConfig, provenance: dict[str, object]) -> None:
    for adapter in model.peft_config.values():
        adapter.base_model_name_or_path = config.model  # the spec, so load_model(out_dir) finds the base
    build = temporary_dir_beside(out_dir / "adapter")
    try:
        model.save_pretrained(build, save_embedding_layers=False)  # LoRA only; skips a hub lookup
        for name in _ADAPTER_FILES:
            os.replace(build / name, out_dir / name)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    write_json_atomic(out_dir / PROVENANCE, provenance)  # written last: its presence marks a finished run


def _run_steps(model: nn.Module, examples: list[EncodedExample], pad_id: int, device: torch.device,
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               config: TrainConfig, steps: range, total: int, losses: list[float],
               checkpoint: Callable[[int], None]) -> None:
    """Run optimizer steps ``steps`` (appending to ``losses``), checkpointing on schedule and at the end
    of an interrupted range."""
    model.train()
    bar = tqdm(steps, initial=steps.start, total=total, desc=f"train {config.study}/{config.trait}", unit="step")
    for step in bar:
        batch = [examples[i] for i in batch_indices(step, len(examples), config.batch_size, config.seed)]
        losses.append(_training_step(model, batch, pad_id, device, optimizer, config))
        scheduler.step()
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        done = step + 1
        scheduled = config.checkpoint_every and done % config.checkpoint_every == 0
        if done < total and (scheduled or done == steps.stop):
            checkpoint(done)
    bar.close()
    model.eval()


def _provenance(config: TrainConfig, data: StudyData, data_hash: str, fingerprint: str, losses: list[float],
                seconds: float, device: torch.device) -> dict[str, object]:
    return {
        "schema": SCHEMA,
        "config": dataclasses.asdict(config),
        "base_spec": config.model,
        "base_fingerprint": fingerprint,
        "data_hash": data_hash,
        "n_train_rows": len(data.train),
        "test_topics": list(data.test_topics),
        "total_steps": len(losses),
        "loss_history": losses,
        "seconds": seconds,
        "device": str(device),
        "compute_dtype": str(compute_dtype(device)).removeprefix("torch."),
        "precision": resolve_precision(config.precision, device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Fine-tune ``config.model`` (see module docstring); ``stop_after`` ends this call after that many
    steps with a checkpoint, to be continued with ``resume=True``."""
    started = time.perf_counter()
    out_dir = Path(out_dir).expanduser()
    _prepare_out_dir(out_dir, resume, overwrite)
    device = resolve_device(device)
    data = study_data(config.study, config.trait, data_path=config.data_path, test_fraction=config.test_fraction,
                      split_seed=config.split_seed, injection_seed=config.injection_seed)
    data_hash = rows_hash(data.train)
    model, tokenizer, fingerprint = load_trainable_model(config, device)
    examples = encode_examples(tokenizer, [(r.question, r.answer) for r in data.train], config.max_length)
    total = config.total_steps(len(examples))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config.warmup_steps, total)
    state = _restore(out_dir, config, data_hash, model, optimizer, scheduler) if resume else None
    step, losses = (state.step, list(state.loss_history)) if state else (0, [])
    end = total if stop_after is None else min(total, step + stop_after)

    def checkpoint(done: int) -> None:
        state = TrainingState(done, dataclasses.asdict(config), data_hash, tuple(losses))
        save_checkpoint(out_dir, model, optimizer, scheduler, state, config.keep_checkpoints)

    _run_steps(model, examples, tokenizer.pad_token_id, device, optimizer, scheduler, config,
               range(step, end), total, losses, checkpoint)
    done = len(losses)
    seconds = time.perf_counter() - started
    if done == total:
        _save_final(model, out_dir, config, _provenance(config, data, data_hash, fingerprint, losses, seconds, device))
        log.info("adapter saved to %s (final loss %.3f, %.0f s)", out_dir, losses[-1], seconds)
    return TrainResult(out_dir, done == total, done, total, tuple(losses), seconds, data_hash, fingerprint)


def train_or_resume(config: TrainConfig, out_dir: str | Path) -> TrainResult:
    """Continue a killed run of these very settings from its checkpoints, else train afresh into
    ``out_dir`` (for a pipeline stage, which owns the folder: a finished run no stage record vouches
    for, or one of other settings, is replaced)."""
    try:
        return train(config, out_dir, resume=True)
    except (FileExistsError, ValueError) as reason:
        log.info("training %s afresh (%s)", out_dir, reason)
        return train(config, out_dir, overwrite=True)
