"""A run checkpoint's EMA weights -> a weights file inference takes, with the run's own task list beside it.

``--export_to_bundle true`` exports ``final.pt`` at the end of training (the handler :class:`ExportAfterTraining`); an
export that would be refused (``models/model.pt`` exists and ``--overwrite`` is not true) is refused before training
starts. Any checkpoint of a
run can be exported later with the ``export`` entry of ``configs/train.json``::

    python -m monai.bundle run export --config_file configs/train.json --run_name NAME \
        [--export_checkpoint best.pt] [--export_path models/model.pt] [--overwrite true]

The task list written beside the weights is the run's own (``run.tasks.json`` in its folder), whatever ``--datalist``
says now. (Serving formats, ONNX and PT2, are ``scripts.export``.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ignite.distributed as idist
from ignite.engine import Engine, Events

from ..io.atomic import OutputExistsError, atomic_torch_save
from ..io.checkpoints import CheckpointError
from ..networks.rows import row_counts
from ..registry import TaskRegistry, companions_of
from ..weights import TASK_LIST_ADVICE, held_weights, read_weights_file
from .run_folder import CHECKPOINT_NAMES

logger = logging.getLogger(__name__)


def check_export_target(destination: str | os.PathLike, overwrite: bool, after_training: bool = False) -> None:
    """Refuse an export whose ``destination`` exists while ``overwrite`` is off (``after_training``: checked before
    training starts, for the export at its end)."""
    path = Path(destination)
    if path.exists() and not overwrite:
        when = " and --export_to_bundle would replace it after training" if after_training else ""
        raise OutputExistsError(
            f"{path} already exists{when}; pass --overwrite true to replace it, or another --export_path"
        )
    if path.is_dir():
        raise OutputExistsError(f"--export_path {path} is a folder; give the weights file to write")


def export_run_weights(
    checkpoint_path: str | os.PathLike,
    destination: str | os.PathLike,
    registry_file: str | os.PathLike,
    overwrite: bool = False,
) -> str | None:
    """Write the checkpoint's EMA weights to ``destination`` and the run's task list beside it.

    Rank 0 only (None on other ranks). ``registry_file`` is the base registry; the run's extra datasets and tasks
    come from the task list that travels with the checkpoint. The weights file is written atomically and never
    replaces an existing file unless ``overwrite``; the task companion is removed when there are no extra tasks, so a
    stale one never travels with new weights.
    """
    if idist.get_rank() != 0:
        return None
    check_export_target(destination, overwrite)
    weights, _ = held_weights(read_weights_file(checkpoint_path), str(checkpoint_path))
    task_list = companions_of(checkpoint_path)
    registry = TaskRegistry.load(registry_file, task_list)
    rows = row_counts(dict(weights)).get("task")
    if rows is not None and rows != registry.num_tasks + 1:
        raise CheckpointError(
            f"{checkpoint_path}: the weights hold {rows - 1} task rows but its task list "
            f"({task_list[0] if task_list else 'none: the published tasks'}) gives {registry.num_tasks}: "
            f"{TASK_LIST_ADVICE}"
        )
    path = atomic_torch_save(dict(weights), destination, overwrite=overwrite)
    companion = registry.write_companion(path)
    logger.info("exported the EMA weights of %s to %s (task list: %s)", checkpoint_path, path, companion or "published")
    return str(path)


class RunExport:
    """The ``export`` entry: ``runs_root/run_name/checkpoint`` exported to ``destination`` when called (as
    :func:`export_run_weights` does); the handler :class:`ExportAfterTraining` calls it when training completes."""

    def __init__(
        self,
        runs_root: str | os.PathLike,
        run_name: str,
        checkpoint: str,
        destination: str | os.PathLike,
        registry_file: str | os.PathLike,
        overwrite: bool = False,
    ) -> None:
        self.source = Path(runs_root) / str(run_name) / checkpoint
        self.destination, self.registry_file, self.overwrite = destination, registry_file, overwrite

    def check_target(self, after_training: bool = False) -> None:
        check_export_target(self.destination, self.overwrite, after_training)

    def __call__(self) -> str | None:
        if not self.source.is_file():
            held = [name for name in CHECKPOINT_NAMES if (self.source.parent / name).is_file()]
            raise CheckpointError(
                f"{self.source}: no such run checkpoint; --run_name names a folder of --runs_root "
                f"({self.source.parent.parent}) and --export_checkpoint one of {', '.join(CHECKPOINT_NAMES)}"
                + (f" (this run has {', '.join(held)})" if held else "")
            )
        return export_run_weights(self.source, self.destination, self.registry_file, self.overwrite)


class ExportAfterTraining:
    """Handler: run ``export`` when training completes (``--export_to_bundle true``).

    Made before training starts (put it first among the handlers: before anything creates the run folder), it
    refuses at once an export that would be refused at the end. Its export step is registered when the run starts, so
    it follows every checkpoint saver's ``COMPLETED`` step (``final.pt`` is written first) whatever the handler order.
    """

    def __init__(self, export: RunExport) -> None:
        export.check_target(after_training=True)
        self.export = export

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: e.add_event_handler(Events.COMPLETED, self))

    def __call__(self, engine: Engine) -> None:
        self.export()
