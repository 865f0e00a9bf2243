"""Which folder a training run writes to, and what it may find there.

Every run writes into ``runs_root/run_name``. A fresh run never writes into a folder that already holds checkpoints
(nothing a user had is overwritten); ``--resume true`` needs the folder's ``latest.pt``, readable (checked here,
before any data is loaded). Without ``--run_name`` a fresh run is named after its start time and a resumed one
continues the newest run that has a ``latest.pt``. Under torch.distributed every rank takes rank 0's name.

The folder is locked like an output folder (``scripts.io.output_folder``) for as long as the process runs, so a second
training into the same ``--run_name`` stops at once. A fresh run writes what it is (``run.json``: the settings that
shape its tensors and data) and its task list (``run.tasks.json``: the companion of every checkpoint in the folder, so
``--ckpt_path runs/NAME/best.pt``, the converter and ``run export`` know the run's own tasks); a resumed run with
other settings is refused.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist

from ..errors import SetupError
from ..io.checkpoints import load_weights_only
from ..io.files import write_json
from ..io.output_folder import OutputFolder
from ..registry import RUN_TASK_LIST, TaskRegistry

LATEST = "latest.pt"
BEST = "best.pt"
FINAL = "final.pt"
CHECKPOINT_NAMES = (LATEST, BEST, FINAL)
#: What a run was started with (the settings a resumed run must keep).
RUN_SETTINGS = "run.json"

#: Run folders this process holds (locked until it ends).
_held: dict[Path, OutputFolder] = {}


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


def resolve_run_dir(
    runs_root: str | os.PathLike,
    run_name: str,
    resume: bool = False,
    registry: TaskRegistry | None = None,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """The folder ``runs_root/run_name`` of this run: created if needed, locked (rank 0), and described.

    Args:
        registry: the run's task registry; a fresh run writes its task list into the folder.
        settings: what shapes the run's tensors and data (roi_size, spacing, network size...); a fresh run records
            them, a resumed run must match the recorded ones.

    Raises:
        RunFolderError: a bad name; a fresh run's folder already holds checkpoints; a resumed run's has no
            ``latest.pt`` or was started with other settings.
        CheckpointError: a resumed run's ``latest.pt`` is not a readable weights-only archive (truncated, foreign).
        SetupError: another process is training into the folder.
    """
    name = str(run_name)
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise RunFolderError(f"--run_name must be a plain folder name, got {run_name!r}")
    run_dir = Path(runs_root) / name
    if resume and not (run_dir / LATEST).is_file():
        raise RunFolderError(
            f"--resume true: {run_dir / LATEST} does not exist; nothing to resume (train without "
            "--resume, or name the run with --run_name)"
        )
    if idist.get_rank() == 0:
        _hold(run_dir)
    existing = [checkpoint for checkpoint in CHECKPOINT_NAMES if (run_dir / checkpoint).exists()]
    if existing and not resume:
        raise RunFolderError(
            f"run folder {run_dir} already holds {', '.join(existing)}; pass --resume true to "
            "continue it, or choose another --run_name"
        )
    if resume:  # a damaged latest.pt stops the run now, not after the data is cached
        load_weights_only(run_dir / LATEST, mmap=True)
    recorded = run_dir / RUN_SETTINGS
    settings = _plain({**(settings or {}), **({"num_tasks": registry.num_tasks} if registry is not None else {})})
    if resume and recorded.is_file():
        _check_same_settings(run_dir, json.loads(recorded.read_text(encoding="utf-8")).get("settings", {}), settings)
    elif idist.get_rank() == 0:  # a fresh run, or one started before runs recorded what they are
        write_json({"settings": settings}, recorded)
        if registry is not None:
            registry.write_task_list(run_dir / RUN_TASK_LIST)
    return str(run_dir)


def _hold(run_dir: Path) -> None:
    """Lock the run folder for this process (once; a second training into it stops with one line)."""
    key = run_dir.resolve()
    if key not in _held:
        folder = OutputFolder(run_dir, "--run_name")
        folder.claim()
        _held[key] = folder


def _plain(value: Any) -> Any:
    """Settings as JSON would give them back (tuples as lists), so recorded and requested compare equal."""
    return json.loads(json.dumps(value, default=str))


def _check_same_settings(run_dir: Path, recorded: Mapping[str, Any], requested: Mapping[str, Any]) -> None:
    changed = [key for key in requested if key in recorded and recorded[key] != requested[key]]
    if changed:
        shown = "; ".join(f"--{key} {recorded[key]} (asked: {requested[key]})" for key in changed)
        raise RunFolderError(
            f"--resume true: run {run_dir} was started with {shown}; resume with the run's settings, or start a "
            "new run with another --run_name"
        )
