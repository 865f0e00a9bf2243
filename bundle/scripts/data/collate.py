"""Batch samples of datasets that annotate different numbers of tasks.

A CT sample of AMOS carries 15 task channels, a LiTS sample 2. The network takes one task list per sample, padded
with the null task -1, and the loss gives null entries weight 0; labels are padded with empty channels to match.
As published, lists are padded to the longest list of the batch plus one column, so every sample carries at least
one null token: the task tokens are keys and values of the network's cross-attention, and the published model never
saw a task list without a null. A validation batch of one case is thereby its dataset's full list plus one -1, the
published validation context.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.data import DataLoader, MetaTensor
from monai.data.utils import collate_meta_tensor

from ..registry import NULL_TASK


def pad_tasks_collate(
    batch: Sequence[Any], task_key: str = "task_index", label_key: str = "label"
) -> dict[Hashable, Any]:
    """Collate dict samples whose ``task_key`` lists (and ``label_key`` channels) differ in length.

    ``batch`` is a list of dicts, or a list of lists of dicts as produced by MONAI crops with ``num_samples > 1``
    (flattened like ``list_data_collate``). ``task_key`` becomes a LongTensor B × (n_max + 1) padded with -1 (the
    longest list plus one null column), ``label_key`` (n × spatial per sample) is padded with empty channels to
    match. Every other key is collated like MONAI's
    ``list_data_collate`` (MetaTensors stay MetaTensors), except per-sample Python lists (such as
    ``task_label_values``) and values that cannot be stacked, which are returned as a list with one entry per sample.
    """
    samples = [s for entry in batch for s in (entry if isinstance(entry, (list, tuple)) else [entry])]
    if not samples:
        raise ValueError("pad_tasks_collate got an empty batch")
    if not all(isinstance(s, Mapping) for s in samples):
        raise TypeError("pad_tasks_collate expects dict samples (MONAI dictionary transforms)")
    samples = [dict(s) for s in samples]
    if all(task_key in s for s in samples):
        task_lists = [torch.as_tensor(s[task_key], dtype=torch.long).reshape(-1) for s in samples]
        width = max(len(t) for t in task_lists) + 1  # at least one null token per sample
        for sample, tasks in zip(samples, task_lists):
            sample[task_key] = _pad_tasks(tasks, width)
            if label_key in sample:
                sample[label_key] = _pad_label(sample[label_key], len(tasks), width)

    collated: dict[Hashable, Any] = {}
    for key in samples[0]:
        values = [s.get(key) for s in samples]
        if isinstance(values[0], (list, tuple)):
            collated[key] = values  # per-sample lists (e.g. task_label_values) stay per sample
            continue
        try:
            collated[key] = collate_meta_tensor(values)
        except (RuntimeError, TypeError, ValueError, IndexError):
            collated[key] = values
    return collated


def _pad_tasks(tasks: torch.Tensor, n_max: int) -> torch.Tensor:
    padding = torch.full((n_max - len(tasks),), NULL_TASK, dtype=torch.long)
    return torch.cat([tasks, padding])


def _pad_label(label: Any, n_tasks: int, n_max: int) -> Any:
    label = torch.as_tensor(label) if not isinstance(label, torch.Tensor) else label
    if label.shape[0] != n_tasks:
        raise ValueError(
            f"a label has {label.shape[0]} channels but its sample lists {n_tasks} tasks; split labels into task "
            "channels (scripts.data.transforms.LabelToTaskChannelsd) before collating"
        )
    if n_tasks == n_max:
        return label
    zeros = torch.zeros((n_max - n_tasks, *label.shape[1:]), dtype=label.dtype, device=label.device)
    padded = torch.cat([label.as_tensor() if isinstance(label, MetaTensor) else label, zeros])
    if isinstance(label, MetaTensor):
        return MetaTensor(padded, meta=label.meta, applied_operations=label.applied_operations)
    return padded


class TaskBatchLoader(DataLoader):
    """MONAI's ``DataLoader`` batching with :func:`pad_tasks_collate` (every other argument is the DataLoader's):
    the one way training, validation and the forgetting measure batch items whose task lists differ."""

    def __init__(self, dataset: Any, **kwargs: Any) -> None:
        super().__init__(dataset, collate_fn=pad_tasks_collate, **kwargs)
