"""A run checkpoint's EMA weights -> a weights file inference takes, with the task list the run trained with.

``--export_to_bundle true`` exports ``final.pt`` at the end of training; an export that would be refused
(``models/model.pt`` exists and ``--overwrite`` is not true) is refused before training starts. Any checkpoint of a
run can be exported later with the ``export`` entry of ``configs/train.json``::

    python -m monai.bundle run export --config_file configs/train.json --run_name NAME \
        [--export_checkpoint best.pt] [--export_path models/model.pt] [--overwrite true] [--datalist DATALIST]

(the datalist names the run's task registry, as in training).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ignite.distributed as idist
import torch

from ..io.atomic import OutputExistsError, atomic_torch_save
from ..io.checkpoints import CheckpointError, load_weights_only
from ..registry import TaskRegistry

logger = logging.getLogger(__name__)

#: The weights a run checkpoint holds, in the order they are preferred (Hermes evaluates its EMA weights).
WEIGHT_KEYS = ("ema_model_state_dict", "model_state_dict")


def check_export_target(destination: str | os.PathLike, overwrite: bool) -> None:
    """Refuse now an export that would be refused after training: ``destination`` exists and ``overwrite`` is off."""
    path = Path(destination)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists and --export_to_bundle would replace it after training; pass "
            "--overwrite true, or another --export_path"
        )
    if path.is_dir():
        raise OutputExistsError(f"--export_path {path} is a folder; give the weights file to write")


def run_weights(checkpoint_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The EMA weights of a run checkpoint (its raw weights when it has none)."""
    checkpoint = load_weights_only(checkpoint_path)
    if isinstance(checkpoint, dict):
        for key in WEIGHT_KEYS:
            weights = checkpoint.get(key)
            if isinstance(weights, dict) and weights and all(isinstance(v, torch.Tensor) for v in weights.values()):
                return weights
    raise CheckpointError(f"{checkpoint_path}: not a run checkpoint (no {' or '.join(WEIGHT_KEYS)})")


def export_run_weights(
    checkpoint_path: str | os.PathLike, destination: str | os.PathLike, registry: TaskRegistry, overwrite: bool = False
) -> str | None:
    """Write the checkpoint's EMA weights to ``destination`` and ``<destination stem>.tasks.json`` beside it.

    Rank 0 only (None on other ranks). The weights file is written atomically and never replaces an existing file
    unless ``overwrite``; the task companion holds the datasets and tasks beyond the published ones (removed when
    there are none, so a stale one never travels with new weights).
    """
    if idist.get_rank() != 0:
        return None
    check_export_target(destination, overwrite)
    weights = run_weights(checkpoint_path)
    path = atomic_torch_save(weights, destination, overwrite=overwrite)
    companion = registry.write_companion(path)
    logger.info("exported the EMA weights of %s to %s (task list: %s)", checkpoint_path, path, companion or "published")
    return str(path)
