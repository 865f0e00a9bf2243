"""Which tensors of a Hermes network hold one row per task or per modality, and how such a tensor grows.

Task rows: every fusion site's ``task_prior`` ((T + 1) × C; the last row is the null token that −1 selects).
Modality rows: every fusion site's ``modality_prior`` (M × L × C) and the modality head's last layer (``M`` classes:
``modality_head.mlp.fc2.weight`` M × D and ``.bias`` M); the last row is the one modality index −1 selects (MRI of
unknown sequence). Both backbones use these names (bundle layout; published names are renamed first).

Growing for tasks or modalities the weights never saw: rows ``0 .. R_old − 2`` keep their row, the old last row (null
task / unknown MRI) stays last, and the rows in between keep the new network's own initialisation (Xavier uniform for
the prior tables, PyTorch's Linear default for the modality head). Every old task and modality thus selects exactly the
values it had.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

#: Row kinds and the name endings that carry them.
TASK, MODALITY = "task", "modality"
_ENDINGS = {
    "task_prior": TASK,
    "modality_prior": MODALITY,
    "modality_head.mlp.fc2.weight": MODALITY,
    "modality_head.mlp.fc2.bias": MODALITY,
}


def row_kind(name: str) -> str | None:
    """``"task"``, ``"modality"`` or None: what the rows (first dimension) of the tensor called ``name`` index."""
    for ending, kind in _ENDINGS.items():
        if name == ending or name.endswith("." + ending):
            return kind
    return None


def grown_rows(name: str, tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``tensor`` grown to ``target``'s row count when it is a per-task/per-modality tensor with fewer rows and the
    same other dimensions: old rows kept, the last row kept last, new rows taken from ``target`` (the network's own
    initialisation). Anything else is returned as it is (a misfit is then reported by the caller)."""
    if (
        row_kind(name) is None
        or tensor.ndim != target.ndim
        or tuple(tensor.shape[1:]) != tuple(target.shape[1:])
        or not 0 < tensor.shape[0] < target.shape[0]
    ):
        return tensor
    grown = target.detach().clone().to(tensor.dtype)
    grown[: tensor.shape[0] - 1] = tensor[:-1]
    grown[-1] = tensor[-1]
    return grown


def row_counts(weights: dict[str, torch.Tensor]) -> dict[str, int]:
    """Rows per kind in a (bundle-layout) state dict: ``{"task": T + 1, "modality": M}`` (kinds it has)."""
    counts: dict[str, int] = {}
    for name, tensor in weights.items():
        kind = row_kind(name)
        if kind is not None and tensor.ndim >= 1:
            counts.setdefault(kind, int(tensor.shape[0]))
    return counts


def row_tensors(network: nn.Module) -> Iterator[tuple[nn.Module, str, str, str]]:
    """``(module, attribute, full name, kind)`` of every per-task/per-modality parameter of ``network``."""
    for module_name, module in network.named_modules():
        for attribute, _ in list(module.named_parameters(recurse=False)):
            full = f"{module_name}.{attribute}" if module_name else attribute
            kind = row_kind(full)
            if kind is not None:
                yield module, attribute, full, kind
