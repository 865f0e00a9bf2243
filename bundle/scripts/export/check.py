"""The check every export passes before it appears: its outputs against the eager network's on seeded windows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import HermesError, SetupError
from .graph import MIN_SIDE, OUTPUT_NAMES, SIZE_DIVISOR

#: An export passes when max |export - eager| <= TOLERANCE x max(1, max |eager|) on every check window.
TOLERANCE = 1e-4
DEFAULT_CHECK_SIZE = 128


class ExportCheckError(HermesError):
    """An exported model does not compute what the eager network computes."""


@dataclass(frozen=True)
class CheckResult:
    tasks: int
    output: str
    max_abs_error: float
    scale: float

    @property
    def relative(self) -> float:
        return self.max_abs_error / max(1.0, self.scale)

    def as_text(self) -> str:
        return (
            f"{self.tasks} tasks, {self.output}: max |export - eager| {self.max_abs_error:.2e} (logit scale {self.scale:.3g}, "
            f"{self.relative:.1e} of max(1, scale))"
        )


class CheckWindows:
    """The eager network's outputs on one ``size``³ window, seeded, for two task lists: one task plus the null token,
    and up to twelve tasks plus the null token (the task count is a dynamic dimension of the export)."""

    def __init__(self, network: nn.Module, size: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.image = torch.randn(1, 1, size, size, size, generator=generator)
        num_tasks = int(network.num_tasks)
        self.cases = [
            (torch.tensor([[0, -1]]), torch.tensor([0])),
            (torch.tensor([list(range(min(num_tasks, 12))) + [-1]]), torch.tensor([-1])),
        ]
        with torch.no_grad():
            self.expected = [
                tuple(output.numpy() for output in network(self.image, tasks, modality, return_modality_logits=True))
                for tasks, modality in self.cases
            ]

    def compare(self, run: Callable[..., tuple[np.ndarray, ...]]) -> list[CheckResult]:
        """One result per check case and output (segmentation logits, modality logits)."""
        results = []
        for (tasks, modality), expected in zip(self.cases, self.expected):
            outputs = run(self.image, tasks, modality)
            if len(outputs) != len(expected):
                raise ExportCheckError(f"the export returned {len(outputs)} outputs, eager {len(expected)}")
            for name, got, want in zip(OUTPUT_NAMES, outputs, expected):
                if got.shape != want.shape:
                    raise ExportCheckError(f"the export's {name} has shape {got.shape}, eager {want.shape}")
                error, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
                results.append(CheckResult(int(tasks.shape[1]), name, error, scale))
        return results


def check_size_of(value: int) -> int:
    size = int(value)
    if size and (size < MIN_SIDE or size % SIZE_DIVISOR):
        raise SetupError(
            f"--check_size: {value} is not a multiple of {SIZE_DIVISOR} of at least {MIN_SIDE} (0 skips the check)"
        )
    return size
