"""The run's checkpoint files, owned by one trainer handler (:class:`RunCheckpoints`): written on rank 0, read back
by ``--resume true``.

- ``latest.pt`` every ``save_interval`` epochs and once at the end (unless that state is already saved): everything a
  resumed run needs (weights, EMA weights, optimiser, schedule, random-number state, progress);
- ``best.pt`` whenever validation improves the evaluator's best key metric;
- ``final.pt`` when training completes.

The files keep the published layout (``model_state_dict``, ``ema_model_state_dict``, ``optimizer_state_dict``,
``epoch``) plus ``iteration``, ``best_metric``, ``best_metric_epoch`` and, in ``latest.pt``, ``lr_scheduler_state_dict``
and ``rng_state``. ``best.pt`` and ``final.pt`` are for use, not resuming: no optimiser or schedule. Which objects go
into which file is decided once, by :class:`CheckpointContents`.

Each file is an ignite ``Checkpoint`` (public API only) whose save handler writes through
``scripts.io.atomic.atomic_torch_save`` (a killed save leaves the old file intact and its temporary is removed by the
next save); "removing" the fixed name is a no-op, so the old file is replaced in one step. No save on an exception: a
failed iteration's state is not worth keeping.

Resuming reads ``latest.pt``, weights-only, when the handler is built, and checks it against what the run will restore
(every entry present, the networks' tensor names and shapes), so an unusable file stops the run before its first step
with one line naming it. The objects and the progress (epoch, iteration, the evaluator's best metric) are restored when the
trainer starts, after everything else is built, through ignite's ``Checkpoint.load_objects``.
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
from torch import nn

from ..errors import SetupError, one_line
from ..io.atomic import atomic_torch_save
from ..io.checkpoints import CheckpointError, load_weights_only
from .ema import unwrap_model
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
    """Which objects a run checkpoint holds, decided here once for writing the files and for resuming from them.

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


def check_fits(module: nn.Module, weights: Any, source: str) -> None:
    """Raise ``CheckpointError`` unless ``weights`` has exactly ``module``'s tensor names and shapes."""
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"{source}: holds a {type(weights).__name__}, not a state dict")
    expected = unwrap_model(module).state_dict()
    missing = [name for name in expected if name not in weights]
    unexpected = [name for name in weights if name not in expected]
    wrong = [name for name in expected if name in weights and tuple(weights[name].shape) != tuple(expected[name].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for what, names in (("missing", missing), ("unexpected", unexpected), ("other shape", wrong))
            if names
        )
        raise CheckpointError(
            f"{source}: does not fit the configured network ({detail}); resume with the settings "
            "the run was started with (network_def, task registry)"
        )


class ResumeFromCheckpoint:
    """Restores a run from ``load_path`` when the trainer starts (the resume half of :class:`RunCheckpoints`).

    Args:
        load_path: the run's ``latest.pt``.
        contents: what the run's checkpoints hold; its ``resume`` entries are restored (in their order: the
            optimiser before the schedule).
        evaluator: gets its best metric and epoch back (None: not restored).
    """

    def __init__(
        self, load_path: str | os.PathLike, contents: CheckpointContents, evaluator: Engine | None = None
    ) -> None:
        self.load_path = Path(load_path)
        self.load_dict = dict(contents.resume)
        self.evaluator = evaluator
        checkpoint = load_weights_only(self.load_path, map_location="cpu")
        if not isinstance(checkpoint, Mapping):
            raise CheckpointError(f"{self.load_path}: holds a {type(checkpoint).__name__}, not a training checkpoint")
        missing = [key for key in [*self.load_dict, "epoch", "iteration"] if checkpoint.get(key) is None]
        if missing:
            raise CheckpointError(
                f"{self.load_path}: lacks {', '.join(missing)}; only a latest.pt of this bundle's "
                "training can be resumed"
            )
        for key, target in self.load_dict.items():
            if isinstance(target, nn.Module):
                check_fits(target, checkpoint[key], f"{self.load_path} ({key})")
        self.checkpoint: Mapping[str, Any] | None = checkpoint

    def attach(self, engine: Engine) -> None:
        epoch, limit = int(self.checkpoint["epoch"]), engine.state.max_epochs
        if limit is not None and epoch >= limit:
            raise SetupError(
                f"{self.load_path} is at epoch {epoch}, not below --max_epochs {limit}; raise "
                "--max_epochs to train further"
            )
        progress = progress_entries(engine, self.evaluator)
        self.load_dict.update({key: entry for key, entry in progress.items() if key in self.checkpoint})
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self.checkpoint is None:
            return
        try:
            Checkpoint.load_objects(to_load=self.load_dict, checkpoint=self.checkpoint, strict=True)
        except Exception as err:  # state dicts of another optimiser, schedule or transform chain
            raise CheckpointError(f"{self.load_path}: cannot resume from it ({one_line(err)})") from err
        self.checkpoint = None  # a release-size file is about 1 GB
        logger.info("resumed %s at epoch %d, iteration %d", self.load_path, engine.state.epoch, engine.state.iteration)


class RunCheckpoints:
    """Trainer handler owning the run folder's checkpoints: ``latest.pt``, ``best.pt``, ``final.pt`` written (rank 0),
    and with ``resume`` the run continued from its ``latest.pt`` (every rank).

    Args:
        save_dir: the run folder.
        evaluator: where the best metric and its epoch live (None: no ``best.pt``, no best metric saved).
        resume: continue from ``save_dir/latest.pt`` (checked now, restored when the trainer starts).
        save_interval: ``latest.pt`` every this many epochs (and once at the end if that epoch was not saved).
        objects: what the checkpoints hold, by :class:`CheckpointContents`' names (``network``, ``ema_model``,
            ``optimizer``, ``lr_scheduler``, ``transforms``, ``sampler``).

    ``best.pt`` is written after a validation that improved the evaluator's best key metric: the evaluator keeps the
    best value and its epoch (restored on resume), so "improved" has one owner, the trainer epoch that just validated
    is the evaluator's ``best_metric_epoch``. Attach it after the validation handler (``latest.pt`` then holds that
    epoch's best metric too).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        evaluator: Engine | None = None,
        resume: bool = False,
        save_interval: int = 1,
        **objects: Any,
    ) -> None:
        contents = CheckpointContents(**objects)
        self.save_dir = Path(save_dir)
        self.contents = {LATEST: contents.resume, BEST: contents.weights, FINAL: contents.weights}
        self.resume = ResumeFromCheckpoint(self.save_dir / LATEST, contents, evaluator) if resume else None
        self.save_interval = max(int(save_interval), 1)
        self.evaluator = evaluator
        self.checkpoints: dict[str, Checkpoint] = {}
        self.latest_epoch = -1

    def attach(self, engine: Engine) -> None:
        if self.resume is not None:
            self.resume.attach(engine)
        if idist.get_rank() > 0:  # every rank holds the same state: rank 0 alone gathers and writes it
            return
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
