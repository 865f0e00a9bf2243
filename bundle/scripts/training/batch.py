"""A collated batch -> what MONAI's trainer and evaluator hand to the network, the loss and the validation metric.

MONAI calls ``network(image, *args)`` and ``loss(pred, target)``, and puts ``target`` into the engine output under
"label". Hermes needs each sample's task list and modality both as network inputs and as loss targets, and the
validation metric needs each sample's dataset; so the target is a small named tuple that carries all of it, and the
loss and the metric read the engine output, never ``engine.state.batch``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from monai.engines.utils import PrepareBatch
from monai.utils import convert_to_tensor

from ..registry import TaskRegistry

#: Batch keys the Hermes transforms and ``pad_tasks_collate`` produce.
BATCH_KEYS = ("image", "label", "task_index", "modality_index", "dataset")


class HermesTargets(NamedTuple):
    """What a batch is scored against."""

    label: torch.Tensor  #: B × n × spatial binary task channels (padding channels empty)
    task_index: torch.Tensor  #: B × n global task ids, -1 pads
    modality_index: torch.Tensor  #: B modality prior rows
    dataset_index: torch.Tensor  #: B positions of the samples' datasets in the task registry


def _plain(value: Any, device: str | torch.device | None, non_blocking: bool, **kwargs: Any) -> torch.Tensor:
    """A plain tensor on ``device``: MetaTensor bookkeeping on every network op costs time and is not needed."""
    return convert_to_tensor(value, track_meta=False).to(device=device, non_blocking=non_blocking, **kwargs)


class HermesPrepareBatch(PrepareBatch):
    """``(image, HermesTargets, (task_index, modality_index), {})`` from a batch of ``pad_tasks_collate``.

    Args:
        registry: the run's task registry; a sample's dataset index is its dataset's position in ``registry.datasets``
            (the order the validation metric uses too).
    """

    def __init__(self, registry: TaskRegistry) -> None:
        self.dataset_names = list(registry.datasets)
        self._index = {name: index for index, name in enumerate(self.dataset_names)}

    def dataset_index(self, names: Any, batch_size: int) -> torch.Tensor:
        names = [names] * batch_size if isinstance(names, str) else [str(name) for name in names]
        unknown = sorted({name for name in names if name not in self._index})
        if unknown or len(names) != batch_size:
            raise ValueError(
                f"batch datasets {names} do not fit the batch of {batch_size} or the task registry "
                f"(unknown: {unknown})"
            )
        return torch.tensor([self._index[name] for name in names], dtype=torch.long)

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, HermesTargets, tuple[torch.Tensor, torch.Tensor], dict]:
        missing = [key for key in BATCH_KEYS if key not in batchdata]
        if missing:
            raise KeyError(
                f"batch lacks keys {missing}; items from scripts.data.datalist.read_datalist through the "
                "Hermes transforms and pad_tasks_collate carry them"
            )
        image = _plain(batchdata["image"], device, non_blocking, **kwargs)
        label = _plain(batchdata["label"], device, non_blocking).float()
        task_index = _plain(batchdata["task_index"], device, non_blocking).long()
        if task_index.ndim == 1:
            task_index = task_index.unsqueeze(0)
        modality_index = _plain(batchdata["modality_index"], device, non_blocking).long().reshape(-1)
        dataset_index = self.dataset_index(batchdata["dataset"], image.shape[0]).to(device)
        targets = HermesTargets(label, task_index, modality_index, dataset_index)
        return image, targets, (task_index, modality_index), {}
