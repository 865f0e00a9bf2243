"""Training pieces that MONAI, ignite and torch lack for Hermes; the workflow itself is ``configs/train.json``.

One job per module:
- ``batch``: a collated batch -> image, network arguments and the targets of the loss and the metric;
- ``losses``: the Hermes loss (masked BCE + adaptive Dice per task, modality cross-entropy);
- ``lamb``: the LAMB optimiser; ``schedule``: the warm-up + poly learning-rate schedule, a torch ``LambdaLR``;
- ``ema``: the published EMA rate on ignite's ``EMAHandler`` (its own average is the EMA model);
- ``dice_metric``: validation Dice per (dataset, task) on MONAI's ``CumulativeIterationMetric``;
- ``validation``: when to validate (every N epochs and every epoch of the last few);
- ``run_folder``: which folder a run writes to; ``checkpoints``: latest/best/final through ignite
  ``Checkpoint`` objects, written atomically, and continuing a run from its ``latest.pt``; ``rng``: the
  random-number state a resumed run needs;
- ``weights_export``: a run checkpoint's EMA weights -> a weights file for inference, with its task list (serving
  formats are ``scripts.export``);
- ``incremental``: freezing all but new task/modality rows (``configs/incremental.json``) and the old-task check;
- ``forgetting``: old tasks' Dice before and after a fine-tuning run (``--old_datalist``);
- ``processes``: torchrun set-up, the rank, per-rank seeds.
"""

from . import (
    batch,
    checkpoints,
    dice_metric,
    ema,
    forgetting,
    incremental,
    lamb,
    losses,
    processes,
    rng,
    run_folder,
    schedule,
    validation,
    weights_export,
)

__all__ = [
    "batch",
    "checkpoints",
    "dice_metric",
    "ema",
    "forgetting",
    "incremental",
    "lamb",
    "losses",
    "processes",
    "rng",
    "run_folder",
    "schedule",
    "validation",
    "weights_export",
]
