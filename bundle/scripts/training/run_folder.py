"""Which folder a training run writes to, and what it may find there.

Every run writes into ``runs_root/run_name``. A fresh run never writes into a folder that already holds checkpoints
(nothing a user had is overwritten); ``--resume true`` needs the folder's ``latest.pt``. Without ``--run_name`` a fresh
run is named after its start time and a resumed one continues the newest run that has a ``latest.pt``. Under
torch.distributed every rank takes rank 0's name. The config evaluates the name once per parse, so no state is kept
here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ignite.distributed as idist

from ..errors import SetupError

LATEST = "latest.pt"
BEST = "best.pt"
FINAL = "final.pt"
CHECKPOINT_NAMES = (LATEST, BEST, FINAL)


class RunFolderError(SetupError):
    """The run folder cannot be used as asked (it holds another run, or has nothing to resume)."""


def _from_rank0(value: str) -> str:
    return idist.broadcast(value, src=0, safe_mode=True) if idist.get_world_size() > 1 else value


def newest_resumable(runs_root: str | os.PathLike) -> str:
    """Name of the run under ``runs_root`` whose ``latest.pt`` was written last."""
    candidates = sorted(Path(runs_root).glob(f"*/{LATEST}"), key=lambda path: path.stat().st_mtime)
    if not candidates:
        raise RunFolderError(f"--resume true: no run under {runs_root} has a {LATEST}; pass --run_name NAME")
    return candidates[-1].parent.name


def default_run_name(runs_root: str | os.PathLike, resume: bool = False) -> str:
    """The run name when ``--run_name`` is not given (rank 0's on every rank).

    Fresh: the start time, ``YYYYmmdd-HHMMSS``, with ``_1``, ``_2``... when that folder exists. Resume: the newest
    run with a ``latest.pt``.
    """
    name = ""
    if idist.get_rank() == 0:
        if resume:
            name = newest_resumable(runs_root)
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name, count = stamp, 0
            while (Path(runs_root) / name).exists():
                count += 1
                name = f"{stamp}_{count}"
    return _from_rank0(name)


def resolve_run_dir(runs_root: str | os.PathLike, run_name: str, resume: bool = False) -> str:
    """The folder ``runs_root/run_name`` of this run, created if needed.

    Raises:
        RunFolderError: a bad name; a fresh run's folder already holds checkpoints; a resumed run's has no
            ``latest.pt``.
    """
    name = str(run_name)
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise RunFolderError(f"--run_name must be a plain folder name, got {run_name!r}")
    run_dir = Path(runs_root) / name
    if resume:
        if not (run_dir / LATEST).is_file():
            raise RunFolderError(
                f"--resume true: {run_dir / LATEST} does not exist; nothing to resume (train without "
                "--resume, or name the run with --run_name)"
            )
        return str(run_dir)
    existing = [checkpoint for checkpoint in CHECKPOINT_NAMES if (run_dir / checkpoint).exists()]
    if existing:
        raise RunFolderError(
            f"run folder {run_dir} already holds {', '.join(existing)}; pass --resume true to "
            "continue it, or choose another --run_name"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return str(run_dir)
