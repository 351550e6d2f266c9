"""Data parallelism on ``torch.distributed``: who am I, which share of the work is mine, and gathering
the shares back in order.

The same code runs in one process (world size 1: every helper is the identity), under ``torchrun``
or ``accelerate launch`` on CPU processes (gloo) and on N GPUs (nccl). Work is split into contiguous
blocks of whole units (batches of prompts, groups of neuron sets), so each rank does exactly the
computation a single process would do for those units; gathering in rank order restores the
single-process order. Nothing here decides *what* is split: capture (``activations.shards``) and the
causal conditions (``interp.causal.proxy.measure_sets``) call it.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the job."""

    rank: int
    size: int
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True under ``torchrun`` / ``accelerate launch`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(backend: str | None = None) -> World:
    """Join the process group the launcher described (env ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...),
    if not joined yet: gloo on CPU, nccl when each rank has a GPU. Without a launcher: world size 1."""
    if dist.is_available() and dist.is_initialized():
        return world()
    if not launched():
        return World(0, 1)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() > local_rank else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend)
    # Leave the group before the interpreter tears down: a process that exits with gloo's threads
    # still running can abort ("terminate called without an active exception", seen once in CI).
    atexit.register(_leave)
    log.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return world()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world() -> World:
    """The current process group (world size 1 when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World(0, 1)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_for(w: World) -> torch.device:
    """The device a rank's model replica belongs on: its own GPU under nccl, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", w.local_rank)
    return torch.device("cpu")


def block_bounds(n_units: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each rank's contiguous block of ``n_units``; sizes differ by at most one
    (earlier ranks take the extra), and a rank may get an empty block when units are few."""
    if size < 1:
        raise ValueError(f"world size must be at least 1, got {size}")
    base, extra = divmod(n_units, size)
    bounds, start = [], 0
    for rank in range(size):
        stop = start + base + (rank < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def my_stride(items: Sequence[T], w: World | None = None) -> Sequence[T]:
    """Every ``size``-th item starting at this rank's: a share that balances work which grows along
    the list (e.g. neuron-set groups sorted by layer); gather ``(index, result)`` pairs to reorder."""
    w = w or world()
    return items[w.rank :: w.size]


def gather_blocks(mine: list[Any], w: World | None = None) -> list[Any]:
    """Every rank's list, concatenated in rank order, on every rank (``all_gather_object``)."""
    w = w or world()
    if w.size == 1:
        return list(mine)
    gathered: list[list[Any] | None] = [None] * w.size
    dist.all_gather_object(gathered, list(mine))
    return [item for block in gathered for item in block]  # type: ignore[union-attr]


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
