"""The network as the sliding-window inferer sees it, and loading the bundle's weights."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..io_utils import load_weights_only, sha256_of
from .errors import SetupError
from .flags import as_flag

HOW_TO_GET_WEIGHTS = (
    "train the model (python -m monai.bundle run training --config_file configs/train.json) "
    "or convert the published checkpoint (python -m scripts.convert_checkpoint SRC models/model.pt), "
    "or pass --ckpt_path WEIGHTS"
)


class TaskSegmenter(nn.Module):
    """Per-task sigmoid probabilities of ``network(image, task_index, modality_index)``.

    MONAI inferers pass extra positional arguments on to the network, so the task and modality indices travel
    with every window. Probabilities (not logits) are returned so that overlapping windows are averaged as
    probabilities, as the published sliding-window inference does. bf16 autocast on CUDA; the output keeps the
    dtype of the input, so a float16 input makes the inferer stitch in float16 (used for very large outputs).
    """

    def __init__(self, network: nn.Module, amp: bool = True) -> None:
        super().__init__()
        self.network = network
        self.amp = amp

    def forward(self, image: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor) -> torch.Tensor:
        use_amp = image.is_cuda and as_flag(self.amp, "amp")
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits = self.network(
                image.float(), task_index.to(image.device), modality_index.to(image.device), return_modality_logits=False
            )
        return torch.sigmoid(logits.float()).to(image.dtype)


def load_weights(network: nn.Module, ckpt_path: str | os.PathLike) -> str:
    """Load a plain state dict (``weights_only=True``) into ``network``; returns the file's sha256."""
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise SetupError(f"no model weights at {path}: {HOW_TO_GET_WEIGHTS}")
    try:
        state = load_weights_only(path)
    except ValueError as err:
        raise SetupError(str(err)) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SetupError(f"{path}: expected a plain state dict of tensors (as models/model.pt); "
                         "convert a training checkpoint with python -m scripts.convert_checkpoint SRC models/model.pt")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise SetupError(f"{path}: weights do not fit the configured network ({detail[:400]}); "
                         "check network_def (base_channels, num_tasks) against the weights") from err
    return sha256_of(path)


def registries_beside(ckpt_path: str | os.PathLike) -> list[str]:
    """The extra task registry exported with the weights (``<stem>.tasks.json``), if any: its tasks are the ones the
    weights were trained on beyond the published 71 (training's ``--export_to_bundle`` writes it)."""
    path = Path(str(ckpt_path)).expanduser()
    companion = path.with_name(path.stem + ".tasks.json")
    return [str(companion)] if companion.is_file() else []
