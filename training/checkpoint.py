"""Training checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` holding the LoRA weights
(``adapter.safetensors``), optimizer and scheduler state, every RNG state (torch CPU and CUDA,
``random``, numpy) and ``state.json`` (step, config, data hash, loss history). It is written into a
temporary folder and renamed into place, so a folder with the final name is always complete.
The batch order is a pure function of (seed, step), so it needs no state of its own.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from activations.atomic_io import temporary_dir_beside, write_json_atomic

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"


@dataclass(frozen=True)
class TrainingState:
    """The bookkeeping part of a checkpoint."""

    step: int
    """Optimizer steps completed."""
    config: dict[str, Any]
    """``dataclasses.asdict(TrainConfig)`` of the run."""
    data_hash: str
    loss_history: tuple[float, ...]
    """Mean training loss of every completed step."""


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "python": _python_state(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[key] for key in sorted(tensors) if key.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    out_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainingState,
    keep: int,
) -> Path:
    """Write a checkpoint for ``state.step`` and prune all but the newest ``keep``."""
    final = out_dir / CHECKPOINTS / f"{_PREFIX}{state.step:08d}"
    build = temporary_dir_beside(final)
    try:
        # LoRA weights only; "auto" would look the base up (on the hub) to check for a resized vocabulary.
        lora = get_peft_model_state_dict(model, save_embedding_layers=False)
        weights = {k: v.detach().to("cpu").contiguous() for k, v in lora.items()}
        save_file(weights, build / "adapter.safetensors")
        torch.save(optimizer.state_dict(), build / "optimizer.pt")
        torch.save(scheduler.state_dict(), build / "scheduler.pt")
        rng_tensors = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng_tensors.update({f"cuda{i:02d}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        torch.save(rng_tensors, build / "rng.pt")
        write_json_atomic(build / "state.json", {
            "step": state.step, "config": state.config, "data_hash": state.data_hash,
            "loss_history": list(state.loss_history), "rng": _rng_state(),
        })
        if final.exists():
            shutil.rmtree(final)
        build.rename(final)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint at step %d: %s", state.step, final)
    return final


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    folder = out_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(_PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def read_state(checkpoint: Path) -> TrainingState:
    raw = json.loads((checkpoint / "state.json").read_text())
    return TrainingState(raw["step"], raw["config"], raw["data_hash"], tuple(raw["loss_history"]))


def load_checkpoint(
    checkpoint: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> TrainingState:
    """Restore adapter weights, optimizer, scheduler and RNG states in place; returns the bookkeeping."""
    device = next(p for p in model.parameters() if p.requires_grad).device
    set_peft_model_state_dict(model, load_file(checkpoint / "adapter.safetensors", device=str(device)))
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
    raw = json.loads((checkpoint / "state.json").read_text())
    _set_rng_state(raw["rng"], torch.load(checkpoint / "rng.pt", weights_only=True))
    return read_state(checkpoint)
