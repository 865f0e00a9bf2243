"""The run's checkpoints, one fixed file name each, written atomically by one handler (:class:`RunCheckpoints`).

- ``latest.pt`` every ``save_interval`` epochs and once at the end (unless that state is already saved): everything a
  resumed run needs (weights, EMA weights, optimiser, schedule, random-number state, progress);
- ``best.pt`` whenever validation improves the evaluator's best key metric;
- ``final.pt`` when training completes.

The files keep the published layout (``model_state_dict``, ``ema_model_state_dict``, ``optimizer_state_dict``,
``epoch``) plus ``iteration``, ``best_metric``, ``best_metric_epoch`` and, in ``latest.pt``, ``lr_scheduler_state_dict``
and ``rng_state``. ``best.pt`` and ``final.pt`` are for use, not resuming: no optimiser or schedule.

Each file is an ignite ``Checkpoint`` (public API only) whose save handler writes through
``scripts.io.atomic.atomic_torch_save`` (a killed save leaves the old file intact and its temporary is removed by the
next save); "removing" the fixed name is a no-op, so the old file is replaced in one step. No save on an exception: a
failed iteration's state is not worth keeping.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import BaseSaveHandler, Checkpoint

from ..io.atomic import atomic_torch_save
from .rng import RandomStates
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


class CheckpointContents:
    """Which objects a run checkpoint holds, decided here once for the saver and the resume handler.

    ``weights`` (``best.pt``, ``final.pt``): the network and its EMA, under the published names. ``resume``
    (``latest.pt``): those plus the optimiser, the schedule and the random-number state of the training chain
    (``transforms``) and the sampler's ``generator``: what a resumed run needs to continue as if never stopped.
    Objects given as None are left out (a run without EMA or schedule).
    """

    def __init__(
        self,
        network: Any,
        ema_model: Any = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        transforms: Any = None,
        sampler: Any = None,
    ) -> None:
        generator = sampler.generator if sampler is not None else None  # a WeightedRandomSampler's own stream
        rng = RandomStates(transforms, generator) if transforms is not None or generator is not None else None
        weights = {"model_state_dict": network, "ema_model_state_dict": ema_model}
        resume = {**weights, "optimizer_state_dict": optimizer, "lr_scheduler_state_dict": lr_scheduler}
        self.weights = {name: item for name, item in weights.items() if item is not None}
        self.resume = {name: item for name, item in {**resume, "rng_state": rng}.items() if item is not None}


class RunCheckpoints:
    """Trainer handler writing ``latest.pt``, ``best.pt`` and ``final.pt`` into the run folder.

    Args:
        save_dir: the run folder.
        contents: what ``latest.pt`` (``contents.resume``), ``best.pt`` and ``final.pt`` (``contents.weights``) hold.
        save_interval: ``latest.pt`` every this many epochs (and once at the end if that epoch was not saved).
        evaluator: where the best metric and its epoch live (None: no ``best.pt``, no best metric saved).

    ``best.pt`` is written after a validation that improved the evaluator's best key metric: the evaluator keeps the
    best value and its epoch (restored on resume), so "improved" has one owner, the trainer epoch that just validated
    is the evaluator's ``best_metric_epoch``. Attach it after the validation handler.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        contents: CheckpointContents,
        save_interval: int = 1,
        evaluator: Engine | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.contents = {LATEST: contents.resume, BEST: contents.weights, FINAL: contents.weights}
        self.save_interval = max(int(save_interval), 1)
        self.evaluator = evaluator
        self.checkpoints: dict[str, Checkpoint] = {}
        self.latest_epoch = -1

    def attach(self, engine: Engine) -> None:
        progress = progress_entries(engine, self.evaluator)
        for name, contents in self.contents.items():
            self.checkpoints[name] = Checkpoint(
                {**contents, **progress},
                AtomicFileSaver(self.save_dir, name),
                n_saved=1,
                global_step_transform=lambda trainer, _: trainer.state.iteration,
            )
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save_latest)
        if self.evaluator is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.save_if_improved)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def save_latest(self, engine: Engine) -> None:
        self.checkpoints[LATEST](engine)
        self.latest_epoch = engine.state.epoch

    def save_if_improved(self, engine: Engine) -> None:
        state, epoch = self.evaluator.state, engine.state.epoch
        if getattr(state, "epoch", -1) == epoch and getattr(state, "best_metric_epoch", -1) == epoch:
            self.checkpoints[BEST](engine)

    def completed(self, engine: Engine) -> None:
        """A release-size ``latest.pt`` is about 1 GB: write it at the end only if this epoch is not saved yet."""
        if self.latest_epoch != engine.state.epoch:
            self.save_latest(engine)
        self.checkpoints[FINAL](engine)
