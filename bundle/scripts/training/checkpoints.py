"""The run's checkpoints, written through MONAI's ``CheckpointSaver`` with one fixed file name each, atomically.

- ``latest.pt`` every ``save_interval`` epochs and once at the end (unless that state is already saved): everything a
  resumed run needs (weights, EMA weights, optimiser, schedule, random-number state, progress);
- ``best.pt`` whenever validation improves the evaluator's best key metric;
- ``final.pt`` when training completes.

The files keep the published layout (``model_state_dict``, ``ema_model_state_dict``, ``optimizer_state_dict``,
``epoch``) plus ``iteration``, ``best_metric``, ``best_metric_epoch`` and, in ``latest.pt``, ``lr_scheduler_state_dict``
and ``rng_state``. ``best.pt`` and ``final.pt`` are for use, not resuming: no optimiser or schedule.

MONAI's saver writes with ignite's ``DiskSaver`` in place (not atomic) and removes the old file before writing the
new one. Here its ignite ``Checkpoint`` objects write through ``scripts.io.atomic.atomic_torch_save`` (a killed save
leaves the old file intact and its temporary is removed by the next save) and "removing" the fixed name is a no-op,
so the old file is replaced in one step. No save on an exception: a failed iteration's state is not worth keeping.
"""

from __future__ import annotations

import abc
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver

from ..io.atomic import atomic_torch_save
from .run_folder import BEST, FINAL, LATEST

logger = logging.getLogger(__name__)


class AtomicFileSaver(BaseSaveHandler):
    """ignite save handler writing one fixed file atomically, whatever name ignite proposes."""

    def __init__(self, dirname: str | os.PathLike, filename: str) -> None:
        self.path = Path(dirname) / filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        atomic_torch_save(dict(checkpoint), self.path, overwrite=True)
        logger.info("rank %d saved %s", idist.get_rank(), self.path)

    def remove(self, filename: str) -> None:
        """Nothing to remove: the next save replaces the file in one step."""


class EngineValue:
    """One number of an engine's state as a checkpoint entry (its ``state_dict`` is the number itself)."""

    def __init__(self, engine: Engine, name: str, default: float = -1) -> None:
        self.engine = engine
        self.name = name
        self.default = default

    def state_dict(self) -> Any:
        value = getattr(self.engine.state, self.name, self.default)
        return int(value) if self.name in ("epoch", "iteration", "best_metric_epoch") else float(value)

    def load_state_dict(self, value: Any) -> None:
        setattr(self.engine.state, self.name, value)


def progress_entries(trainer: Engine, evaluator: Engine | None) -> dict[str, EngineValue]:
    """The progress numbers every checkpoint holds at its top level."""
    entries = {"epoch": EngineValue(trainer, "epoch"), "iteration": EngineValue(trainer, "iteration")}
    if evaluator is not None:
        entries["best_metric"] = EngineValue(evaluator, "best_metric")
        entries["best_metric_epoch"] = EngineValue(evaluator, "best_metric_epoch")
    return entries


class RunCheckpointSaver(CheckpointSaver, abc.ABC):
    """MONAI ``CheckpointSaver`` writing ``save_dir/filename`` atomically, plus the progress numbers.

    Args:
        save_dir: the run folder.
        save_dict: name -> object with ``state_dict`` (networks, optimiser, ...).
        filename: the fixed file name.
        evaluator: where the best metric lives (None: not saved).
        kwargs: what MONAI's saver takes to decide when to save.
    """

    def __init__(
        self, save_dir: str, save_dict: Mapping[str, Any], filename: str, evaluator: Engine | None = None, **kwargs: Any
    ) -> None:
        super().__init__(save_dir=save_dir, save_dict=dict(save_dict), **kwargs)
        self.evaluator = evaluator
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = AtomicFileSaver(save_dir, filename)

    def attach(self, engine: Engine) -> None:
        """Add the trainer's progress to what is saved (ignite's ``Checkpoint`` objects share ``save_dict``)."""
        self.save_dict.update(progress_entries(engine, self.evaluator))
        if self._name is None:
            self.logger = engine.logger
        self.attach_events(engine)

    @abc.abstractmethod
    def attach_events(self, engine: Engine) -> None:
        """Register when this checkpoint is written (each subclass says)."""


class LatestCheckpointSaver(RunCheckpointSaver):
    """``latest.pt`` every ``save_interval`` epochs, and at the end if the last epoch was not saved."""

    def __init__(
        self, save_dir: str, save_dict: Mapping[str, Any], save_interval: int = 1, evaluator: Engine | None = None
    ) -> None:
        super().__init__(save_dir, save_dict, LATEST, evaluator, save_interval=max(int(save_interval), 1), n_saved=1)

    def attach_events(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.interval_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def completed(self, engine: Engine) -> None:
        """A release-size ``latest.pt`` is about 1 GB: write it at the end only if this epoch is not saved yet."""
        saved = self._interval_checkpoint._saved if self._interval_checkpoint is not None else []
        if not saved or saved[-1].priority != engine.state.epoch:
            self.interval_completed(engine)


class BestCheckpointSaver(RunCheckpointSaver):
    """``best.pt`` after a validation that improved the evaluator's best key metric.

    The evaluator keeps the best value and its epoch (restored on resume), so "improved" has one owner: the trainer
    epoch that just validated is the evaluator's ``best_metric_epoch``. MONAI's key-metric checkpoint then scores the
    evaluator. Attach it to the trainer after the validation handler.
    """

    def __init__(self, save_dir: str, save_dict: Mapping[str, Any], evaluator: Engine) -> None:
        super().__init__(
            save_dir,
            save_dict,
            BEST,
            evaluator,
            save_key_metric=True,
            key_metric_filename=BEST,
            key_metric_greater_or_equal=True,
        )

    def attach_events(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save_if_improved)

    def save_if_improved(self, engine: Engine) -> None:
        state = self.evaluator.state
        epoch = engine.state.epoch
        if getattr(state, "epoch", -1) == epoch and getattr(state, "best_metric_epoch", -1) == epoch:
            self.metrics_completed(self.evaluator)


class FinalCheckpointSaver(RunCheckpointSaver):
    """``final.pt`` when training completes (not on an exception)."""

    def __init__(self, save_dir: str, save_dict: Mapping[str, Any], evaluator: Engine | None = None) -> None:
        super().__init__(save_dir, save_dict, FINAL, evaluator, save_final=True, final_filename=FINAL)

    def attach_events(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self.completed)
