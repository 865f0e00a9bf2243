"""The label map rule, on whatever device the probabilities are: label ``k+1`` where channel ``k`` is the most
probable and above the threshold, 0 elsewhere; the first channel wins a tie. Fed a few channels at a time, so no
full-resolution array per task is ever alive at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class LabelMap:
    """Running most-probable label above ``threshold`` on a grid of ``shape``."""

    def __init__(
        self, shape: Sequence[int], threshold: float, num_labels: int, device: torch.device | str = "cpu"
    ) -> None:
        self.best = torch.full(tuple(shape), float(threshold), dtype=torch.float32, device=device)
        self.labels = torch.zeros(tuple(shape), dtype=torch.uint8 if num_labels < 256 else torch.int16, device=device)

    def add(self, first_channel: int, probs: torch.Tensor) -> None:
        for offset, channel in enumerate(probs):
            channel = channel.float()
            better = channel > self.best
            self.labels.masked_fill_(better, first_channel + offset + 1)
            torch.maximum(self.best, channel, out=self.best)

    def numpy(self) -> np.ndarray:
        out = self.labels.cpu().numpy()
        return out.astype(np.uint16) if out.dtype == np.int16 else out


def label_map_from(probs: torch.Tensor | np.ndarray, threshold: float) -> np.ndarray:
    """The label map of ``C × spatial`` probabilities, as a host array."""
    probs = torch.as_tensor(probs)
    labels = LabelMap(probs.shape[1:], threshold, len(probs), probs.device)
    labels.add(0, probs)
    return labels.numpy()
