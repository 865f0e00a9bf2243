"""What every Hermes network accepts: one image batch, each sample's task list and its modality.

Shared by Hermes-R and Hermes-M so that both reject the same bad inputs with the same words, whichever backbone a
config builds.
"""

from __future__ import annotations

import torch


def flat_modality_index(modality_index: torch.Tensor) -> torch.Tensor:
    """``B × 1`` (the published layout) -> ``B``; anything else is returned unchanged for ``check_inputs``."""
    if modality_index.ndim == 2 and modality_index.shape[1] == 1:
        return modality_index[:, 0]
    return modality_index


def check_inputs(
    image: torch.Tensor,
    task_index: torch.Tensor,
    modality_index: torch.Tensor,
    size_divisor: int,
    num_tasks: int,
    num_modalities: int,
) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first problem of a forward pass's inputs."""
    if image.ndim != 5:
        raise ValueError(f"image must be B×C×D×H×W, got shape {tuple(image.shape)}")
    if any(s % size_divisor for s in image.shape[2:]):
        raise ValueError(
            f"every spatial size must be a multiple of {size_divisor}, got {tuple(image.shape[2:])}; "
            "pad the image (the bundle's inference pads automatically)"
        )
    if task_index.ndim != 2 or task_index.shape[0] != image.shape[0]:
        raise ValueError(f"task_index must be B×n with B={image.shape[0]}, got shape {tuple(task_index.shape)}")
    if modality_index.shape[0] != image.shape[0] or modality_index.ndim != 1:
        raise ValueError(
            f"modality_index must have shape (B,) or (B, 1) with B={image.shape[0]}, got {tuple(modality_index.shape)}"
        )
    if task_index.dtype.is_floating_point or modality_index.dtype.is_floating_point:
        raise TypeError("task_index and modality_index must be integer tensors")
    if not torch.compiler.is_compiling() and task_index.numel():
        if int(task_index.min()) < -1 or int(task_index.max()) >= num_tasks:
            raise ValueError(f"task ids must lie in [-1, {num_tasks - 1}], got {task_index.tolist()}")
        if int(modality_index.min()) < -1 or int(modality_index.max()) >= num_modalities:
            raise ValueError(f"modality ids must lie in [-1, {num_modalities - 1}], got {modality_index.tolist()}")
