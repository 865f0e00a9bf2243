"""What a weights file may be, and loading it into the network: the one door for inference, evaluation and export.

Accepted, always with ``weights_only=True``:
- the bundle's weights file (``models/model.pt``): a plain state dict with this bundle's tensor names;
- a run checkpoint of this bundle's training (``latest.pt``, ``best.pt``, ``final.pt``): its EMA weights;
- a published Hermes checkpoint (``ema_model_state_dict`` with the authors' tensor names): renamed in memory.

Each of them holds one backbone, Hermes-R or Hermes-M, recognised by its tensor names (``backbone_of_weights``):
inference and evaluation build the network the weights at ``ckpt_path`` need without being told.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint_names import (BACKBONE_NAMES, backbone_of, is_published_layout, published_to_bundle_name,
                               strip_wrappers)
from .errors import SetupError
from .io.checkpoints import CheckpointError, load_weights_only
from .io.files import sha256_of

#: Keys of a training checkpoint, in the order they are preferred (the EMA weights are the ones Hermes evaluates).
STATE_KEYS = {"ema": "ema_model_state_dict", "model": "model_state_dict"}
#: The network options that decide tensor shapes, as a misfit message names them.
_SIZE_OPTIONS = {"r": "base_channels / num_tasks / num_modalities",
                 "m": "base_channels / num_tasks / num_modalities / attention_blocks / map_size / fusion_depth / "
                      "expansion"}
HOW_TO_GET_WEIGHTS = (
    "train the model (python -m monai.bundle run training --config_file configs/train.json), download the published "
    "weights (python -m monai.bundle download_large_files --bundle_path .), or pass --ckpt_path WEIGHTS"
)


@dataclass(frozen=True)
class LoadedWeights:
    """Where the weights came from, as the sidecar and the logs report it."""

    path: str
    sha256: str
    kind: str

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256, "kind": self.kind}


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def convert_published(published: Mapping[str, torch.Tensor], network: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Rename published tensors to ``network``'s names, checking that every one exists and fits."""
    expected = network.state_dict()
    backbone = backbone_of(published)
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in published.items():
        try:
            new_name = published_to_bundle_name(strip_wrappers(name), backbone)
        except KeyError as err:
            raise CheckpointError(f"{source}: {err.args[0]}") from None
        if new_name not in expected:
            raise CheckpointError(f"{source}: tensor '{name}' has no place in the configured network ({new_name})")
        if tensor.shape == (*expected[new_name].shape, 1, 1, 1) and expected[new_name].ndim == 2:
            tensor = tensor.reshape(expected[new_name].shape)  # a 1×1×1 convolution kernel as a Linear weight
        if tuple(tensor.shape) != tuple(expected[new_name].shape):
            raise CheckpointError(
                f"{source}: tensor '{name}' has shape {tuple(tensor.shape)} but the configured network needs "
                f"{tuple(expected[new_name].shape)} for '{new_name}'; check {_SIZE_OPTIONS[backbone]}"
            )
        converted[new_name] = tensor.detach().to(expected[new_name].dtype).contiguous().clone()
    missing = [name for name in expected if name not in converted]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(f"{source}: {len(missing)} tensors of the configured network are missing: {shown}")
    return converted


def held_weights(checkpoint: Any, source: str, state: str = "ema") -> tuple[Mapping[str, torch.Tensor], str]:
    """The state dict a loaded weights file or checkpoint holds (its names untouched), and what kind of file it was."""
    kind = "weights"
    weights = checkpoint
    if isinstance(checkpoint, Mapping) and (STATE_KEYS["ema"] in checkpoint or STATE_KEYS["model"] in checkpoint):
        key = STATE_KEYS[state] if checkpoint.get(STATE_KEYS[state]) is not None else STATE_KEYS["model"]
        weights, kind = checkpoint.get(key), f"checkpoint ({key})"
    if not _is_state_dict(weights):
        found = ", ".join(sorted(map(str, checkpoint))[:8]) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(f"{source}: neither a weights file nor a Hermes checkpoint (it holds: {found})")
    return weights, kind


def state_dict_of(checkpoint: Any, network: nn.Module, source: str, state: str = "ema") -> tuple[dict, str]:
    """The network's state dict held by a loaded checkpoint, and what kind of file it was."""
    weights, kind = held_weights(checkpoint, source, state)
    own = network.state_dict()
    held, configured = backbone_of(weights), backbone_of(own)
    if held != configured:
        raise CheckpointError(
            f"{source}: holds {BACKBONE_NAMES[held]} weights but the configured network is {BACKBONE_NAMES[configured]}"
            f"; configure backbone '{held}' (the overlay configs/hermes_m.json selects Hermes-M; the converter takes "
            f"--backbone {held})")
    names = {strip_wrappers(name) for name in weights}
    if names & set(own) and not is_published_layout(names):
        return {strip_wrappers(name): tensor for name, tensor in weights.items()}, kind
    return convert_published(weights, network, source), f"published {kind}, converted"


def load_weights(network: nn.Module, ckpt_path: str | os.PathLike, state: str = "ema") -> LoadedWeights:
    """Load any accepted weights file into ``network`` (strict); every problem is one line naming the file."""
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise SetupError(f"no model weights at {path}: {HOW_TO_GET_WEIGHTS}")
    weights, kind = state_dict_of(load_weights_only(path), network, str(path), state)
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).strip().splitlines()[:3])
        raise CheckpointError(f"{path}: weights do not fit the configured network ({detail[:400]}); check "
                              "network_def (base_channels, num_tasks) against the weights") from err
    return LoadedWeights(str(path.resolve()), sha256_of(path), kind)


def backbone_of_weights(ckpt_path: str | os.PathLike) -> str:
    """The backbone (``"r"`` or ``"m"``) of the weights at ``ckpt_path``, by their tensor names, in any accepted
    format; ``"r"`` (the released backbone) while there is no file yet, so that configs resolve before training."""
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        return "r"
    weights, _ = held_weights(load_weights_only(path), str(path))
    return backbone_of(weights)
