"""What a weights file may be, and loading it into the network: the one door for inference, evaluation and export.

Accepted, always with ``weights_only=True``:
- the bundle's weights file (``models/model.pt``): a plain state dict with this bundle's tensor names;
- a run checkpoint of this bundle's training (``latest.pt``, ``best.pt``, ``final.pt``): its EMA weights;
- a published Hermes checkpoint (``ema_model_state_dict`` with the authors' tensor names): renamed in memory.

Each of them holds one backbone, Hermes-R or Hermes-M, recognised by its tensor names (``backbone_of_weights``):
inference and evaluation build the network the weights at ``ckpt_path`` need without being told.

A missing file says what to run to get one; a file that is not a complete checkpoint (a download that stopped part way,
a web page saved in its place) says to delete it and download again. Fine-tuning (``--finetune true`` of
``configs/train.json``) starts from any accepted file through :func:`start_from`, growing the task prior tables for the
tasks a datalist adds.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint_names import BACKBONE_NAMES, backbone_of, is_published_layout, published_to_bundle_name, strip_wrappers
from .errors import SetupError
from .io.checkpoints import CheckpointError, load_weights_only
from .io.files import sha256_of
from .networks.rows import grown_rows, row_counts, row_kind
from .registry import companion_path

#: Keys of a training checkpoint, in the order they are preferred (the EMA weights are the ones Hermes evaluates).
STATE_KEYS = {"ema": "ema_model_state_dict", "model": "model_state_dict"}
#: The network options that decide tensor shapes, as a misfit message names them.
_SIZE_OPTIONS = {
    "r": "base_channels / num_tasks / num_modalities",
    "m": "base_channels / num_tasks / num_modalities / attention_blocks / map_size / fusion_depth / " "expansion",
}
#: What fetches the published weights to models/model.pt (large_files.yml), from the bundle folder.
DOWNLOAD_COMMAND = "python -m monai.bundle download_large_files --bundle_path ."
#: The same with one-line failures and a check that the landed file loads.
DOWNLOAD_WRAPPER = "python -m scripts.download_weights"
#: The by-hand route when the download is refused.
MANUAL_DOWNLOAD = (
    "or download the published checkpoint in a browser and save it as models/model.pt "
    "(docs/README.md, Getting the weights)"
)
HOW_TO_GET_WEIGHTS = (
    f"download the published weights ({DOWNLOAD_COMMAND}, or {DOWNLOAD_WRAPPER}, from the bundle folder), train the "
    "model (python -m monai.bundle run training --config_file configs/train.json --export_to_bundle true), or pass "
    "--ckpt_path WEIGHTS"
)
#: Why a task table does not fit: the task list that travels with the weights is not the one the network was built for.
TASK_LIST_ADVICE = (
    "the weights' task list travels beside them (model.tasks.json for models/model.pt, run.tasks.json in a run "
    "folder); keep it with the weights, or give the registry they were trained with (--task_registry_extra)"
)
BROKEN_FILE_ADVICE = (
    f"if it is a download that stopped part way or a web page saved in its place, delete it and download again "
    f"({DOWNLOAD_WRAPPER}), {MANUAL_DOWNLOAD}"
)

logger = logging.getLogger(__name__)


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


def _grown_tables(weights: Mapping[str, torch.Tensor], network: nn.Module) -> dict[str, torch.Tensor]:
    expected = network.state_dict()
    return {name: grown_rows(name, t, expected[name]) if name in expected else t for name, t in weights.items()}


def check_row_counts(weights: Mapping[str, torch.Tensor], network: nn.Module, source: str) -> None:
    """Refuse weights with more task or modality rows than the configured network: they were trained with tasks or
    modalities the task registry does not know (their companion task list is missing), and cutting rows would lose
    them."""
    held, configured = row_counts(dict(weights)), row_counts(network.state_dict())
    for kind, rows in held.items():
        if rows > configured.get(kind, rows):
            what = "task rows (tasks + null)" if kind == "task" else "modality rows"
            raise CheckpointError(
                f"{source}: its {kind} prior tables have {rows} {what} but the task registry gives the network only "
                f"{configured[kind]}; the weights were trained with {kind}s this registry does not know: put their task "
                f"list ({companion_path(source).name}) beside them or pass --task_registry_extra with it"
            )


def convert_published(
    published: Mapping[str, torch.Tensor], network: nn.Module, source: str, grow_task_tables: bool = False
) -> dict[str, torch.Tensor]:
    """Rename published tensors to ``network``'s names, checking that every one exists and fits (task and modality
    tables with fewer rows are grown first when ``grow_task_tables``: fine-tuning with extra tasks or modalities,
    ``scripts.networks.rows``)."""
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
        if tensor.ndim == 5 and tensor.shape[2:] == (1, 1, 1) and expected[new_name].ndim == 2:
            tensor = tensor.reshape(tensor.shape[:2])  # a 1×1×1 convolution kernel as a Linear weight
        if (
            row_kind(new_name)
            and tensor.ndim == expected[new_name].ndim
            and tensor.shape[0] > expected[new_name].shape[0]
        ):
            check_row_counts({new_name: tensor}, network, source)
        if grow_task_tables:
            tensor = grown_rows(new_name, tensor, expected[new_name])
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
        found = (
            ", ".join(sorted(map(str, checkpoint))[:8])
            if isinstance(checkpoint, Mapping)
            else type(checkpoint).__name__
        )
        raise CheckpointError(f"{source}: neither a weights file nor a Hermes checkpoint (it holds: {found})")
    return weights, kind


def state_dict_of(
    checkpoint: Any, network: nn.Module, source: str, state: str = "ema", grow_task_tables: bool = False
) -> tuple[dict, str]:
    """The network's state dict held by a loaded checkpoint, and what kind of file it was (``grow_task_tables``: see
    ``scripts.networks.rows.grown_rows``)."""
    weights, kind = held_weights(checkpoint, source, state)
    own = network.state_dict()
    held, configured = backbone_of(weights), backbone_of(own)
    if held != configured:
        raise CheckpointError(
            f"{source}: holds {BACKBONE_NAMES[held]} weights but the configured network is {BACKBONE_NAMES[configured]}"
            f"; configure backbone '{held}' (the overlay configs/hermes_m.json selects Hermes-M; the converter takes "
            f"--backbone {held})"
        )
    names = {strip_wrappers(name) for name in weights}
    if names & set(own) and not is_published_layout(names):
        plain = {strip_wrappers(name): tensor for name, tensor in weights.items()}
        check_row_counts(plain, network, source)
        return (_grown_tables(plain, network) if grow_task_tables else plain), kind
    converted = convert_published(weights, network, source, grow_task_tables)
    return converted, f"published {kind}, converted"


def read_weights_file(ckpt_path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` of a weights file or checkpoint; a missing file says how to get one, a file
    that is not a complete checkpoint (half-downloaded, a saved web page) says to delete it and download again."""
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise SetupError(f"no model weights at {path}: {HOW_TO_GET_WEIGHTS}")
    try:
        return load_weights_only(path)
    except CheckpointError as err:
        if zipfile.is_zipfile(path):
            raise
        raise CheckpointError(f"{err}; {path.stat().st_size:,} bytes: {BROKEN_FILE_ADVICE}") from err


def load_weights(
    network: nn.Module, ckpt_path: str | os.PathLike, state: str = "ema", grow_task_tables: bool = False
) -> LoadedWeights:
    """Load any accepted weights file into ``network`` (strict); every problem is one line naming the file.

    ``grow_task_tables``: task and modality tables of the weights with fewer rows than the network's are grown (the
    network's registry has tasks or modalities the weights never saw: fine-tuning on a datalist that adds them).
    """
    path = Path(str(ckpt_path)).expanduser()
    checkpoint = read_weights_file(path)
    weights, kind = state_dict_of(checkpoint, network, str(path), state, grow_task_tables)
    held, now = row_counts(_bundle_names(held_weights(checkpoint, str(path), state)[0])), row_counts(weights)
    if held.get("task", 0) < now.get("task", 0):
        kind += f", task prior tables grown from {held['task'] - 1} to {now['task'] - 1} tasks"
    if held.get("modality", 0) < now.get("modality", 0):
        kind += f", modality tables grown from {held['modality']} to {now['modality']} modalities"
    fit_into(network, weights, str(path))
    return LoadedWeights(str(path.resolve()), sha256_of(path), kind)


def fit_into(network: nn.Module, weights: Mapping[str, torch.Tensor], source: str) -> None:
    """``network.load_state_dict(weights, strict=True)``, with a misfit explained in one line: a task table of
    another size is the weights' task list gone missing; any other shape names the size options to check."""
    expected = network.state_dict()
    for name, tensor in weights.items():
        if name not in expected or tuple(tensor.shape) == tuple(expected[name].shape):
            continue
        if name.endswith("task_prior") and tensor.ndim == 2 and tensor.shape[1:] == expected[name].shape[1:]:
            raise CheckpointError(
                f"{source}: the weights hold {tensor.shape[0] - 1} task rows but the network is built for "
                f"{expected[name].shape[0] - 1}: {TASK_LIST_ADVICE}"
            )
        raise CheckpointError(
            f"{source}: tensor '{name}' has shape {tuple(tensor.shape)} but the configured network needs "
            f"{tuple(expected[name].shape)}; check {_SIZE_OPTIONS[backbone_of(expected)]} against the weights"
        )
    try:
        network.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).strip().splitlines()[:3])
        raise CheckpointError(
            f"{source}: weights do not fit the configured network ({detail[:400]}); check "
            "network_def (base_channels, num_tasks) against the weights"
        ) from err


def backbone_of_weights(ckpt_path: str | os.PathLike) -> str:
    """The backbone (``"r"`` or ``"m"``) of the weights at ``ckpt_path``, by their tensor names, in any accepted
    format; ``"r"`` (the released backbone) while there is no file yet, so that configs resolve before training."""
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        return "r"
    weights, _ = held_weights(read_weights_file(path), str(path))
    return backbone_of(weights)


def start_from(network: nn.Module, ckpt_path: str | os.PathLike | None, resuming: bool = False) -> nn.Module:
    """``network`` holding the weights at ``ckpt_path`` (any accepted file: the published checkpoint, a weights file,
    a run checkpoint's EMA weights), ready to fine-tune; unchanged when ``ckpt_path`` is None or empty, or when
    ``resuming`` (the run's latest.pt holds the weights).

    Tasks the network's registry has beyond the weights' (a datalist that adds datasets) get new rows of the task
    prior tables, initialised as the network's own; every task id of the weights keeps its row.
    """
    if ckpt_path is None or str(ckpt_path) == "" or resuming:  # a resumed run's latest.pt holds its weights
        return network
    loaded = load_weights(network, ckpt_path, grow_task_tables=True)
    logger.info("fine-tuning starts from %s (%s, sha256 %s)", loaded.path, loaded.kind, loaded.sha256[:12])
    return network


def _bundle_names(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` under this bundle's tensor names (published names renamed; names without a place dropped)."""
    names = [strip_wrappers(name) for name in weights]
    if not is_published_layout(names):
        return dict(zip(names, weights.values()))
    backbone, renamed = backbone_of(weights), {}
    for name, tensor in zip(names, weights.values()):
        try:
            renamed[published_to_bundle_name(name, backbone)] = tensor
        except KeyError:
            continue
    return renamed


def held_rows(ckpt_path: str | os.PathLike) -> dict[str, int]:
    """Task rows (tasks + null) and modality rows of the weights at ``ckpt_path``, any accepted format."""
    path = Path(str(ckpt_path)).expanduser()
    return row_counts(_bundle_names(held_weights(read_weights_file(path), str(path))[0]))


def bundle_state_dict(ckpt_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The (EMA) weights at ``ckpt_path`` under this bundle's tensor names, without building a network (analysis)."""
    path = Path(str(ckpt_path)).expanduser()
    weights = held_weights(read_weights_file(path), str(path))[0]
    renamed = _bundle_names(weights)
    for name, tensor in renamed.items():  # a published 1×1×1 convolution kernel is a Linear weight here
        if tensor.ndim == 5 and tensor.shape[2:] == (1, 1, 1):
            renamed[name] = tensor.reshape(tensor.shape[:2])
    return renamed
