"""Draw training samples dataset by dataset, with the registry's per-dataset weights.

Hermes mixes eleven datasets of very different sizes; without weights the large ones (AMOS CT, autoPET) would
dominate. By default a dataset's chance of being drawn is its ``sample_weight`` divided by the sum of the weights of
the datasets present, whatever its number of cases (item weight = dataset weight / number of its items).
``weighting="per_item"`` reproduces the published code instead, where every case carries its dataset's weight, so a
dataset's chance also grows with its number of cases.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from torch.utils.data import WeightedRandomSampler

from ..registry import TaskRegistry

WEIGHTINGS = ("per_dataset", "per_item")


def item_weights(
    items: Sequence[Mapping[str, Any]], registry: TaskRegistry, weighting: str = "per_dataset"
) -> torch.Tensor:
    """Sampling weight of every item (float64, as ``WeightedRandomSampler`` wants)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got '{weighting}'")
    if not items:
        raise ValueError("cannot sample from an empty datalist")
    names = []
    for index, item in enumerate(items):
        name = item.get("dataset")
        if name not in registry.datasets:
            raise ValueError(
                f"item {index} (image {item.get('image')}): unknown dataset {name!r}; the task registry knows "
                f"{sorted(registry.datasets)}"
            )
        names.append(name)
    counts = Counter(names)
    weights = []
    for name in names:
        weight = float(registry.datasets[name]["sample_weight"])
        weights.append(weight / counts[name] if weighting == "per_dataset" else weight)
    return torch.tensor(weights, dtype=torch.float64)


def dataset_weighted_sampler(
    items: Sequence[Mapping[str, Any]],
    registry: TaskRegistry,
    num_samples: int,
    weighting: str = "per_dataset",
    seed: int | None = None,
) -> WeightedRandomSampler:
    """A sampler drawing ``num_samples`` item indices with replacement, datasets weighted by the registry.

    ``num_samples`` is the number of samples per epoch of this process. In a multi-GPU run every rank draws from the
    whole datalist with its own stream (``seed`` plus its rank; the sampler's public ``generator``, which a run
    checkpoint saves), as the published training did (a ``WeightedRandomSampler`` per process, no sharding): with
    few cases per dataset, a shard could miss a dataset. ``seed`` None: torch's global stream.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    weights = item_weights(items, registry, weighting)
    generator = None if seed is None else torch.Generator().manual_seed(int(seed) + idist.get_rank())
    return WeightedRandomSampler(weights, num_samples=int(num_samples), replacement=True, generator=generator)
