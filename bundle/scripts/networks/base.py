"""``HermesNetwork``: what every Hermes backbone shares, owned once.

The contract (Gao et al., CVPR 2024): ``forward(image, task_index, modality_index)`` segments the requested tasks,
one binary channel per task id (−1 pads a shorter task list with the null token), and classifies the modality from the
modality tokens. Split in two so that a predictor running several task contexts on one window computes the part the
task tokens do not reach once (``encode_context_free``) and the rest per context (``forward_contexts``). Inputs are
checked the same way, with the same words, whichever backbone a config builds.

A backbone implements only what differs: ``encode_context_free`` and ``decode`` (its encoder/decoder with the prior
fusion sites), and sets ``task_head`` and ``modality_head``.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..errors import SetupError

#: Total down-sampling of every backbone (four halvings). The published network floors odd sizes when pooling, which
#: silently drops border voxels; by default the bundle rejects such inputs instead (inference pads to a multiple).
SIZE_DIVISOR = 16

#: A segmentation output: the logits, or ``[main, auxiliary]`` (Hermes-M in training mode).
SegOutput = torch.Tensor | list[torch.Tensor]


def check_window(roi_size: Sequence[int], size_divisor: int = SIZE_DIVISOR) -> list[int]:
    """The window's three sides; a ``SetupError`` naming ``--roi_size`` unless each is a positive multiple of
    ``size_divisor`` (otherwise training and every case of inference fail later, deep in a forward pass)."""
    number = isinstance(roi_size, numbers.Integral) and not isinstance(roi_size, bool)
    try:
        sides = [roi_size] * 3 if number else list(roi_size)
    except TypeError:
        sides = []
    whole = [int(s) for s in sides if isinstance(s, numbers.Integral) and not isinstance(s, bool)]
    if not number and len(sides) == len(whole) == 3 and all(s > 0 and s % size_divisor == 0 for s in whole):
        return whole
    fitted = [size_divisor * max(1, math.ceil(s / size_divisor)) for s in whole]
    raise SetupError(
        f"--roi_size {roi_size}: expected three window sides, each a positive multiple of {size_divisor} (the "
        f"network's total down-sampling){f'; the nearest that fits: {fitted}' if len(fitted) == 3 else ''}"
    )


class Decoded(NamedTuple):
    """What a backbone's decoder hands to the heads."""

    features: torch.Tensor  #: full-resolution features, B × C × D × H × W
    posterior: torch.Tensor  #: the tokens after every fusion site: B × (n tasks + L modality tokens) × dim
    auxiliary: torch.Tensor | None = None  #: auxiliary logits at full size, when asked for and the backbone has them


def flat_modality_index(modality_index: torch.Tensor) -> torch.Tensor:
    """``B × 1`` (the published layout) -> ``B``; anything else is returned unchanged for ``check_inputs``."""
    if modality_index.ndim == 2 and modality_index.shape[1] == 1:
        return modality_index[:, 0]
    return modality_index


class HermesNetwork(nn.Module, abc.ABC):
    """Base of Hermes-R and Hermes-M: the forward pass, the input checks and the context protocol.

    Args:
        num_tasks: task prior rows, excluding the null row.
        num_modalities: modality prior rows.
        size_divisor: every input side must be a multiple of this.
    """

    task_head: nn.Module
    modality_head: nn.Module

    def __init__(self, num_tasks: int, num_modalities: int, size_divisor: int) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.num_modalities = num_modalities
        self.size_divisor = size_divisor

    @abc.abstractmethod
    def encode_context_free(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The part of the network the task tokens do not reach (computed once per window by a predictor)."""

    @abc.abstractmethod
    def decode(
        self, shared: list[torch.Tensor], task_index: torch.Tensor, modality_index: torch.Tensor, auxiliary: bool
    ) -> Decoded:
        """The rest of the encoder and the decoder, with the priors fused at every site."""

    def check_inputs(self, image: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first problem of a forward pass's inputs."""
        if image.ndim != 5:
            raise ValueError(f"image must be B×C×D×H×W, got shape {tuple(image.shape)}")
        if any(s % self.size_divisor for s in image.shape[2:]):
            raise ValueError(
                f"every spatial size must be a multiple of {self.size_divisor}, got {tuple(image.shape[2:])}; "
                "pad the image (the bundle's inference pads automatically)"
            )
        if task_index.ndim != 2 or task_index.shape[0] != image.shape[0]:
            raise ValueError(f"task_index must be B×n with B={image.shape[0]}, got shape {tuple(task_index.shape)}")
        if modality_index.shape[0] != image.shape[0] or modality_index.ndim != 1:
            raise ValueError(
                f"modality_index must have shape (B,) or (B, 1) with B={image.shape[0]}, got "
                f"{tuple(modality_index.shape)}"
            )
        if task_index.dtype.is_floating_point or modality_index.dtype.is_floating_point:
            raise TypeError("task_index and modality_index must be integer tensors")
        if not torch.compiler.is_compiling() and task_index.numel():
            if int(task_index.min()) < -1 or int(task_index.max()) >= self.num_tasks:
                raise ValueError(f"task ids must lie in [-1, {self.num_tasks - 1}], got {task_index.tolist()}")
            if int(modality_index.min()) < -1 or int(modality_index.max()) >= self.num_modalities:
                raise ValueError(
                    f"modality ids must lie in [-1, {self.num_modalities - 1}], got {modality_index.tolist()}"
                )

    def forward_contexts(
        self,
        shared: list[torch.Tensor],
        task_index: torch.Tensor,
        modality_index: torch.Tensor,
        return_modality_logits: bool = True,
        return_auxiliary: bool | None = None,
    ) -> tuple[SegOutput, torch.Tensor] | SegOutput:
        """The forward pass from ``encode_context_free``'s output, for the given task tokens."""
        auxiliary = self.training if return_auxiliary is None else return_auxiliary
        n = task_index.shape[1]
        decoded = self.decode(shared, task_index, modality_index, auxiliary)
        seg_logits: SegOutput = self.task_head(decoded.features, decoded.posterior[:, :n])
        if decoded.auxiliary is not None:
            seg_logits = [seg_logits, decoded.auxiliary]
        if not return_modality_logits:
            return seg_logits
        return seg_logits, self.modality_head(decoded.posterior[:, n:])

    def forward(
        self,
        image: torch.Tensor,
        task_index: torch.Tensor,
        modality_index: torch.Tensor,
        return_modality_logits: bool = True,
        return_auxiliary: bool | None = None,
    ) -> tuple[SegOutput, torch.Tensor] | SegOutput:
        """Segment the requested tasks.

        Args:
            image: B×C×D×H×W, spatial sizes multiples of ``size_divisor``.
            task_index: B×n global task ids; −1 pads a shorter task list (null token).
            modality_index: B or B×1 modality ids; −1 = MRI of unknown sequence.
            return_modality_logits: also return the modality head's B×M logits (sliding-window inference skips them).
            return_auxiliary: segmentation output ``[main, auxiliary]`` where the backbone has an auxiliary head
                (Hermes-M); default: in training mode.

        Returns:
            ``(seg_logits B×n×D×H×W, modality_logits B×M)``, or only ``seg_logits``.
        """
        modality_index = flat_modality_index(modality_index)
        self.check_inputs(image, task_index, modality_index)
        return self.forward_contexts(
            self.encode_context_free(image), task_index, modality_index, return_modality_logits, return_auxiliary
        )
