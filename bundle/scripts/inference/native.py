"""From the network's grid back to the input's: merge task channels, invert the preprocessing in channel chunks,
and build the label map without holding every task's full-resolution probabilities at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from .task_selection import TaskGroup


def merge_groups(probs: torch.Tensor, task_index: Sequence[int], groups: Sequence[TaskGroup]) -> torch.Tensor:
    """One channel per label group: the mean probability of the group's tasks (channels follow ``task_index``)."""
    position = {int(t): i for i, t in enumerate(task_index)}
    merged = [probs[[position[t] for t in g.task_ids]].float().mean(dim=0) for g in groups]
    return torch.stack(merged).to(probs.dtype)


def label_map_from(probs: np.ndarray | torch.Tensor, threshold: float) -> np.ndarray:
    """Label ``k+1`` where channel ``k`` is the most probable and above ``threshold``; 0 elsewhere (first wins ties)."""
    acc = LabelAccumulator(tuple(probs.shape[1:]), threshold, len(probs))
    acc.add(0, np.asarray(probs, dtype=np.float32))
    return acc.labels


class LabelAccumulator:
    """Running most-probable label above the threshold, fed a few channels at a time."""

    def __init__(self, shape: tuple[int, ...], threshold: float, num_labels: int) -> None:
        self.best = np.full(shape, threshold, dtype=np.float32)
        self.labels = np.zeros(shape, dtype=np.uint8 if num_labels < 256 else np.uint16)

    def add(self, first_channel: int, probs: np.ndarray) -> None:
        for offset, channel in enumerate(probs):
            better = channel > self.best
            self.labels[better] = first_channel + offset + 1
            self.best[better] = channel[better]


def invert_in_chunks(
    postprocessing: Callable[[dict], dict], image: Any, probs: torch.Tensor, chunk: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first channel, probabilities on the input's grid)`` for ``chunk`` channels at a time.

    ``postprocessing`` holds MONAI's ``Invertd`` (keys "pred", orig_keys "image"), which undoes the image's
    recorded spacing and orientation on ``pred``.
    """
    for start in range(0, probs.shape[0], max(1, int(chunk))):
        part = MetaTensor(probs[start : start + max(1, int(chunk))].float().cpu())  # Invertd inverts MetaTensors
        out = postprocessing({"image": image, "pred": part})["pred"]
        yield start, np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out, dtype=np.float32)
