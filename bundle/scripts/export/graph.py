"""The served graph: the eval-mode network's main segmentation logits and its modality head's logits, traced once
with ``torch.export`` with batch, task count and every spatial side dynamic."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import nn

from ..networks.base import SIZE_DIVISOR

INPUT_NAMES = ("image", "task_index", "modality_index")
#: The graph's outputs, in order: segmentation logits B × T × D × H × W, modality head logits B × M.
OUTPUT_NAMES = ("seg_logits", "modality_logits")
#: Each side: a multiple of the networks' size divisor, and at least two of them (torch.export specialises a side of
#: one divisor, where the deepest level is a single voxel).
MIN_SIDE = 2 * SIZE_DIVISOR


class ServedNetwork(nn.Module):
    """The served graph: the eval-mode network's main segmentation logits and modality logits (a server that is not
    told the modality asks the head, as inference does for a NIfTI without ``--modality``)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval()

    def forward(
        self, image: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seg_logits, modality_logits = self.network(image, task_index, modality_index, return_modality_logits=True)
        return seg_logits, modality_logits


def dynamic_shapes() -> dict[str, dict[int, Any]]:
    """Batch, task count and every side dynamic; sides multiples of 16, at least 32."""
    dim = torch.export.Dim
    batch, tasks = dim("batch", min=1), dim("tasks", min=1)
    sides = [SIZE_DIVISOR * dim(name, min=MIN_SIDE // SIZE_DIVISOR) for name in ("depth", "height", "width")]
    return {
        "image": {0: batch, 2: sides[0], 3: sides[1], 4: sides[2]},
        "task_index": {0: batch, 1: tasks},
        "modality_index": {0: batch},
    }


def example_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tracing inputs: every dynamic size distinct and above 1 (torch.export specialises sizes 0 and 1)."""
    image = torch.zeros(2, 1, 2 * SIZE_DIVISOR, 3 * SIZE_DIVISOR, 4 * SIZE_DIVISOR)
    return image, torch.tensor([[0, -1, -1], [0, 0, -1]]), torch.tensor([0, -1])


def trace(module: nn.Module) -> torch.export.ExportedProgram:
    with torch.no_grad():
        return torch.export.export(module, example_inputs(), dynamic_shapes=dynamic_shapes(), strict=False)


class _Quiet:
    """Silences the exporters' progress lines and warnings (torchvision absent, deprecations) during a block."""

    LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.fx.experimental.symbolic_shapes", "onnxscript")

    def __enter__(self) -> None:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._levels = {name: logging.getLogger(name).level for name in self.LOGGERS}
        for name in self.LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._warnings.__exit__(*exc)
