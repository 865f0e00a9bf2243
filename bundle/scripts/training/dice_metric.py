"""Validation Dice of every (dataset, task) pair and their unweighted mean, the key metric of training.

``PerTaskDice`` is a MONAI ``CumulativeIterationMetric``: each validation batch adds, per sample, one row of Dice
values and one row of "the structure is in this label" flags over all (dataset, task) pairs of the task registry, so
every rank's rows have the same width and MONAI gathers them across ranks under DDP. ``PerTaskDiceHandler`` is MONAI's
``IgniteMetricHandler`` around it, which also writes the per-pair and per-dataset values into ``engine.state.metrics``
as ``<name>/<dataset>/<task name>`` and ``<name>/<dataset>``.

Predictions are per-task probabilities (``scripts.predict.WindowPredictor``), thresholded at 0.5. A pair counts only
on cases whose label holds the structure (Dice is undefined otherwise), so a task missing from a small validation
split leaves the mean alone; a validation with no labelled structure at all scores 0 with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import CumulativeIterationMetric
from monai.utils import convert_to_tensor

from ..registry import TaskRegistry

logger = logging.getLogger(__name__)


class PerTaskDice(CumulativeIterationMetric):
    """Mean Dice per (dataset, task) pair of the registry, and the mean over the pairs seen.

    Call it with ``(probabilities B × n × spatial, HermesTargets)``; the targets' ``task_index`` (B × n, -1 pads)
    says which task each channel is and ``dataset_index`` which registry dataset each sample belongs to.

    Args:
        registry: the run's task registry; its dataset order is the one ``HermesPrepareBatch`` numbers datasets by.
        threshold: probability above which a voxel counts as predicted.
    """

    def __init__(self, registry: TaskRegistry, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = float(threshold)
        self.pairs: list[tuple[str, str]] = []  # (dataset, task name) of every column
        self._column: dict[tuple[int, int], int] = {}  # (dataset index, task id) -> column
        for dataset_index, dataset in enumerate(registry.datasets):
            for task in registry.tasks_of(dataset):
                self._column[(dataset_index, task.id)] = len(self.pairs)
                self.pairs.append((dataset, task.name))
        self.per_pair: dict[tuple[str, str], float] = {}

    def __call__(self, y_pred: Any, y: Any = None, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """Add one batch (MONAI's list handling would split the targets tuple into samples)."""
        if y is None or len(y) != 4:
            raise ValueError(
                "PerTaskDice needs the batch's HermesTargets (label, task_index, modality_index, " "dataset_index) as y"
            )
        scores, present = self._compute_tensor(convert_to_tensor(y_pred, track_meta=False), y)
        self.extend(scores, present)
        return scores

    @torch.no_grad()
    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        label = convert_to_tensor(y.label, track_meta=False)
        if y_pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(y_pred.shape)} does not match label shape {tuple(label.shape)}")
        predicted = y_pred.float() > self.threshold
        truth = label > 0.5
        dims = tuple(range(2, predicted.ndim))
        intersection = (predicted & truth).sum(dims).double()
        totals = predicted.sum(dims).double() + truth.sum(dims).double()
        has_truth = truth.sum(dims) > 0
        batch = y_pred.shape[0]
        scores = torch.zeros(batch, len(self.pairs), dtype=torch.float64)
        present = torch.zeros(batch, len(self.pairs), dtype=torch.float64)
        task_index, dataset_index = y.task_index.cpu(), y.dataset_index.reshape(-1).cpu()
        for b in range(batch):
            for c in range(task_index.shape[1]):
                task = int(task_index[b, c])
                if task < 0 or not bool(has_truth[b, c]):
                    continue
                column = self._column.get((int(dataset_index[b]), task))
                if column is None:
                    raise ValueError(f"task {task} is not a task of the sample's dataset {int(dataset_index[b])}")
                scores[b, column] = float(2 * intersection[b, c] / totals[b, c])
                present[b, column] = 1.0
        return scores, present

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """Mean over the pairs seen on all ranks; fills ``per_pair``. 0 (with a warning) when none was seen."""
        if self._buffers is None:  # a rank without validation cases still takes part in the gather
            empty = torch.zeros(len(self.pairs), dtype=torch.float64)
            self.append(empty, empty)
        scores, present = self.get_buffer()
        counts = present.sum(0)
        sums = (scores * present).sum(0)
        self.per_pair = {self.pairs[i]: float(sums[i] / counts[i]) for i in range(len(self.pairs)) if counts[i] > 0}
        if not self.per_pair:
            logger.warning("validation: no case holds any labelled structure of its tasks; the Dice is 0")
            return torch.tensor(0.0)
        return torch.tensor(sum(self.per_pair.values()) / len(self.per_pair))

    def per_dataset(self) -> dict[str, float]:
        """Mean of each dataset's pairs (from the last ``aggregate``)."""
        grouped: dict[str, list[float]] = {}
        for (dataset, _), value in self.per_pair.items():
            grouped.setdefault(dataset, []).append(value)
        return {dataset: sum(values) / len(values) for dataset, values in grouped.items()}


class PerTaskDiceHandler(IgniteMetricHandler):
    """``IgniteMetricHandler`` of :class:`PerTaskDice`; the details go next to the key metric in the engine state.

    The evaluator must keep batches whole (``decollate=False``) so the targets tuple reaches the metric.
    """

    def __init__(self, registry: TaskRegistry, threshold: float = 0.5) -> None:
        super().__init__(
            metric_fn=PerTaskDice(registry, threshold),
            output_transform=from_engine(["pred", "label"]),
            save_details=False,
        )

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        metric: PerTaskDice = self.metric_fn  # type: ignore[assignment]
        for (dataset, task), value in metric.per_pair.items():
            engine.state.metrics[f"{name}/{dataset}/{task}"] = value
        for dataset, value in metric.per_dataset().items():
            engine.state.metrics[f"{name}/{dataset}"] = value
