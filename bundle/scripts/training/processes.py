"""One training process among several (torchrun) or alone: setting up, the rank, seeds.

``--distributed true`` (``configs/multi_gpu_train.json``) starts the process group (nccl on CUDA, gloo on CPU) and
pins each rank's GPU; every rank seeds its own random stream (seed + rank), and only rank 0 logs (that overlay sets
``is_not_rank0``, which disables train.json's console and TensorBoard handlers, and splits validation over the ranks
without padding, so no case is counted twice).
"""

from __future__ import annotations

import logging

import ignite.distributed as idist
import monai
import torch
import torch.distributed as dist

from ..cli import Flags


def start(flags: Flags, device: torch.device, seed: int) -> int:
    """Start the process group if ``flags.distributed``, seed this rank, quieten ignite off rank 0; the rank."""
    if flags.distributed:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(device)
    if rank() > 0:
        logging.getLogger("ignite").setLevel(logging.WARNING)
    monai.utils.set_determinism(seed=seed + rank())
    return rank()


def stop() -> None:
    """End the process group, all ranks together.

    The barrier keeps a rank that has nothing left to do (rank 1 skips the checkpoint writes) from tearing down its
    connections while rank 0 is still writing: gloo can then abort the early rank (SIGABRT), failing a finished run.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    return idist.get_rank()
