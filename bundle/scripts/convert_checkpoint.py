"""Convert a published Hermes-R checkpoint into this bundle's weights file (a plain state dict).

Run from the bundle folder::

    python -m scripts.convert_checkpoint SRC models/model.pt [--state ema|model] [--overwrite]

The published file is a ``torch.save`` dict holding ``model_state_dict`` and ``ema_model_state_dict`` (the EMA weights
are the ones the paper evaluates, hence the default). Every tensor is renamed to this bundle's module names and checked
against the configured network before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoint_names import published_to_bundle_name
from .io_utils import atomic_torch_save, load_weights_only
from .networks.hermes import HermesResUNet

STATE_KEYS = {"ema": "ema_model_state_dict", "model": "model_state_dict"}
# Prefixes added by DistributedDataParallel / torch.compile around the published module names.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """The source file is not a usable Hermes-R checkpoint for the configured network."""


def _strip_wrappers(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def extract_state(checkpoint: object, source: Path, state: str = "ema") -> Mapping[str, torch.Tensor]:
    """Pick the requested weights out of the published checkpoint dict."""
    key = STATE_KEYS[state]
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{source}: expected a dict with '{key}', found a {type(checkpoint).__name__}")
    if key not in checkpoint:
        found = ", ".join(sorted(map(str, checkpoint))[:8])
        raise CheckpointError(f"{source}: no '{key}' in the checkpoint (it holds: {found}); is this a Hermes checkpoint?")
    weights = checkpoint[key]
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{source}: '{key}' is not a state dict of tensors")
    return weights


def convert_state_dict(
    published: Mapping[str, torch.Tensor], network: torch.nn.Module, source: Path | str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename published tensors to ``network``'s names and check that every one exists and fits."""
    expected = network.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in published.items():
        try:
            new_name = published_to_bundle_name(_strip_wrappers(name))
        except KeyError as err:
            raise CheckpointError(f"{source}: {err.args[0]}") from None
        if new_name not in expected:
            raise CheckpointError(f"{source}: tensor '{name}' has no place in the configured network ({new_name})")
        if tuple(tensor.shape) != tuple(expected[new_name].shape):
            raise CheckpointError(
                f"{source}: tensor '{name}' has shape {tuple(tensor.shape)} but the configured network needs "
                f"{tuple(expected[new_name].shape)} for '{new_name}'; check base_channels / num_tasks / num_modalities"
            )
        converted[new_name] = tensor.detach().to(expected[new_name].dtype).contiguous().clone()
    missing = [name for name in expected if name not in converted]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(f"{source}: {len(missing)} tensors of the configured network are missing: {shown}")
    return converted


def build_network(config_file: str | None, overrides: Mapping[str, int]) -> HermesResUNet:
    """The network whose shapes the weights must fit: a bundle config's ``network_def``, or the release size."""
    if config_file:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(config_file)
        for key, value in overrides.items():
            parser[f"network_def#{key}"] = value
        return parser.get_parsed_content("network_def")
    return HermesResUNet(**overrides)


def convert(
    source: str | Path,
    destination: str | Path,
    state: str = "ema",
    overwrite: bool = False,
    config_file: str | None = None,
    **network_overrides: int,
) -> Path:
    """Convert ``source`` into a state dict at ``destination``; returns the written path."""
    source, destination = Path(source), Path(destination)
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} already exists; pass --overwrite to replace it")
    network = build_network(config_file, network_overrides)
    try:
        checkpoint = load_weights_only(source)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    weights = convert_state_dict(extract_state(checkpoint, source, state), network, source)
    network.load_state_dict(weights, strict=True)  # a last guard: exactly what inference will do
    return atomic_torch_save(weights, destination, overwrite=overwrite)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.convert_checkpoint",
        description="Convert a published Hermes-R checkpoint into the bundle's weights file (a plain state dict).",
    )
    parser.add_argument("source", help="published checkpoint (.pth) holding model_state_dict / ema_model_state_dict")
    parser.add_argument("destination", help="output weights file, e.g. models/model.pt")
    parser.add_argument("--state", choices=sorted(STATE_KEYS), default="ema", help="which weights to take (default: ema)")
    parser.add_argument("--overwrite", action="store_true", help="replace the destination if it exists")
    parser.add_argument("--config_file", help="bundle config whose network_def the weights must fit (default: release size)")
    for name in ("in_channels", "base_channels", "num_tasks", "num_modalities", "modality_tokens"):
        parser.add_argument(f"--{name}", type=int, help=f"override the network's {name}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    overrides = {
        name: getattr(args, name)
        for name in ("in_channels", "base_channels", "num_tasks", "num_modalities", "modality_tokens")
        if getattr(args, name) is not None
    }
    try:
        written = convert(args.source, args.destination, args.state, args.overwrite, args.config_file, **overrides)
    except (CheckpointError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    weights = load_weights_only(written)
    count = sum(t.numel() for t in weights.values())
    print(f"wrote {written}: {len(weights)} tensors, {count:,} parameters ({args.state} weights of {args.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
