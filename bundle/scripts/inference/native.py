"""From the network's grid back to the input's: merge task channels into labels, invert a few channels at a time,
and write the label map (plus optional masks and probabilities) without holding every task's full-resolution
probabilities at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..predict import invert_in_chunks
from .writers import CaseOutput, NativeGrid, OutputPaths


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


def write_native(
    output: CaseOutput,
    paths: OutputPaths,
    grid: NativeGrid,
    image: Any,
    merged: torch.Tensor,
    postprocessing: Callable[[dict], dict],
    threshold: float,
    invert_chunk: int,
) -> np.ndarray:
    """Invert a few labels at a time to the input's grid, staging masks/probabilities; returns the label map."""
    labels = LabelAccumulator(grid.shape, threshold, len(merged))
    for start, native in invert_in_chunks(postprocessing, image, merged, invert_chunk):
        labels.add(start, native)
        for offset, probability in enumerate(native):
            label = start + offset + 1
            if label in paths.masks:
                output.volume(paths.masks[label], (probability > threshold).astype(np.uint8), grid)
            if label in paths.probabilities:
                output.volume(paths.probabilities[label], probability.astype(np.float32), grid)
    output.volume(paths.label_map, labels.labels, grid)
    return labels.labels
