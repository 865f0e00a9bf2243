"""Continuing a run from its ``latest.pt`` (``--resume true``).

The file is read, weights-only, when the handler is built, and checked against what the run will restore (every
entry present, the networks' tensor names and shapes), so an unusable file stops the run before any work with one
line naming it. The objects (networks, EMA, optimiser, schedule position, random-number state) and the progress
(epoch, iteration, the evaluator's best metric) are restored when the trainer starts, after everything else is
built, through ignite's ``Checkpoint.load_objects`` (MONAI's ``CheckpointLoader`` reads the file itself, at start).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from torch import nn

from ..errors import SetupError, one_line
from ..io.checkpoints import CheckpointError, load_weights_only
from .checkpoints import CheckpointContents, progress_entries
from .ema import unwrap_model
from .run_folder import LATEST

logger = logging.getLogger(__name__)


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
    """Trainer handler restoring a run from ``load_path`` when the trainer starts.

    Args:
        load_path: the run's ``latest.pt``, or its run folder (which holds it).
        contents: what the run's checkpoints hold; its ``resume`` entries are restored (in their order: the
            optimiser before the schedule).
        evaluator: gets its best metric and epoch back (None: not restored).
    """

    def __init__(
        self, load_path: str | os.PathLike, contents: CheckpointContents, evaluator: Engine | None = None
    ) -> None:
        self.load_path = Path(load_path) / LATEST if Path(load_path).is_dir() else Path(load_path)
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
