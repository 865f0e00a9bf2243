"""The processes of one run under ``torchrun``: which device each uses and which cases each segments.

``torchrun --nproc_per_node=N -m monai.bundle run inference ...`` starts N copies of the same workflow; each reads
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from its environment, takes every N-th case, and rank 0 prints the one
summary of all cases (each case is written exactly once, by the rank that owns it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def compute_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when a GPU is present (``cuda:0`` for a single process), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}")


class Ranks:
    """This process's place in the run (rank 0 of 1 outside ``torchrun``, or when ``distributed`` is False: a
    workflow that does not share its cases)."""

    def __init__(self, distributed: bool = True) -> None:
        self.size = world_size() if distributed else 1
        self.rank = int(os.environ.get("RANK", "0")) if self.size > 1 else 0
        self._started_here = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self) -> None:
        """Join the process group (gloo: it only carries outcomes and barriers, whatever the compute device)."""
        if self.size > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
            self._started_here = True

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's cases: every ``size``-th one from ``rank`` (order kept)."""
        return list(items)[self.rank :: self.size]

    def barrier(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order (on every rank)."""
        if self.size == 1 or not dist.is_initialized():
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def stop(self) -> None:
        if self._started_here and dist.is_initialized():
            dist.destroy_process_group()
            self._started_here = False
