"""Convert a Hermes checkpoint into this bundle's weights file (a plain state dict), checked against the network.

Run from the bundle folder::

    python -m scripts.convert_checkpoint SRC models/model.pt [--state ema|model] [--overwrite]

SRC may be the published checkpoint (its tensors are renamed to this bundle's names) or a run checkpoint of this
bundle's training (``best.pt``, ``final.pt``, ``latest.pt``), of either backbone: Hermes-R or Hermes-M is recognised
by the tensor names (``--backbone r|m`` insists on one), the number of tasks by the task table (a run that added tasks
has more), and the task list that travels with the source (``run.tasks.json`` of a run) is written beside the result.
Every tensor is checked against the network built for that backbone (release size unless options or ``--config_file``
say otherwise) and the first misfit is named. The EMA weights are the default: they are the ones the paper evaluates.
Inference and evaluation also read such files directly; converting once saves the renaming at every start and gives a
smaller file. A failure is one line (``error: ...``, see ``scripts.cli``) and exit status 1.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoint_names import BACKBONE_NAMES, backbone_of
from .cli import run_command
from .errors import SetupError
from .io.atomic import OutputExistsError, atomic_torch_save
from .io.checkpoints import load_weights_only
from .networks import backbone_class
from .networks.rows import row_counts
from .registry import companion_path, companions_of
from .weights import STATE_KEYS, fit_into, held_weights, state_dict_of

NETWORK_OPTIONS = ("in_channels", "base_channels", "num_tasks", "num_modalities", "modality_tokens")
#: Hermes-M's own architecture options (name -> number of values, 1 for a single int); release values by default.
MEDFORMER_OPTIONS = {"attention_blocks": 5, "conv_blocks": 3, "map_size": 1, "fusion_depth": 1, "expansion": 1}


def build_network(config_file: str | None, overrides: Mapping[str, int], backbone: str = "r") -> torch.nn.Module:
    """The network whose shapes the weights must fit: a bundle config's ``network_def`` (its ``backbone`` set to the
    given one), or the release size of the backbone."""
    if config_file:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(config_file)
        if "backbone" in parser:
            parser["backbone"] = backbone
        for key, value in overrides.items():
            parser[f"network_def#{key}"] = value
        return parser.get_parsed_content("network_def")
    return backbone_class(backbone)(**overrides)


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """The size options of both backbones, for every command that builds a network for a weights file."""
    for name in NETWORK_OPTIONS:
        parser.add_argument(f"--{name}", type=int, help=f"override the network's {name}")
    for name, count in MEDFORMER_OPTIONS.items():
        values = f" ({count} values)" if count > 1 else ""
        parser.add_argument(
            f"--{name}",
            type=int,
            nargs=None if count == 1 else count,
            help=f"Hermes-M only: override the network's {name}{values}",
        )


def network_overrides(args: argparse.Namespace) -> dict[str, int]:
    """The size options given on the command line (the rest stays at the release size)."""
    return {
        name: getattr(args, name) for name in (*NETWORK_OPTIONS, *MEDFORMER_OPTIONS) if getattr(args, name) is not None
    }


def convert(
    source: str | Path,
    destination: str | Path,
    state: str = "ema",
    overwrite: bool = False,
    config_file: str | None = None,
    backbone: str | None = None,
    **network_overrides: int,
) -> Path:
    """Convert ``source`` into a state dict at ``destination``; returns the written path.

    ``backbone`` ("r" or "m"): the network to build; by default the one the source's tensor names belong to.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists() and not overwrite:
        raise OutputExistsError(f"{destination} already exists; pass --overwrite to replace it")
    checkpoint = load_weights_only(source)
    backbone = backbone or backbone_of(held_weights(checkpoint, str(source), state)[0])
    misplaced = sorted(set(network_overrides) & set(MEDFORMER_OPTIONS)) if backbone != "m" else []
    if misplaced:
        raise SetupError(
            f"--{misplaced[0]} is an option of {BACKBONE_NAMES['m']}, but {source} is converted for "
            f"{BACKBONE_NAMES[backbone]}"
        )
    held = row_counts(dict(held_weights(checkpoint, str(source), state)[0])).get("task")
    if held and "num_tasks" not in network_overrides and not config_file:
        network_overrides = {**network_overrides, "num_tasks": held - 1}  # a run that added tasks has more rows
    network = build_network(config_file, network_overrides, backbone)
    weights, _ = state_dict_of(checkpoint, network, str(source), state)
    fit_into(network, weights, str(source))  # a last guard: exactly what inference will do
    written = atomic_torch_save(weights, destination, overwrite=overwrite)
    task_list = companions_of(source)
    if task_list:  # the source's task list travels with the converted weights
        shutil.copyfile(task_list[0], companion_path(written))
    else:
        companion_path(written).unlink(missing_ok=True)
    return written


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.convert_checkpoint",
        description="Convert a Hermes checkpoint into the bundle's weights file.",
    )
    parser.add_argument("source", help="published checkpoint (.pth) or a run checkpoint (best.pt, final.pt)")
    parser.add_argument("destination", help="output weights file, e.g. models/model.pt")
    parser.add_argument(
        "--state", choices=sorted(STATE_KEYS), default="ema", help="which weights to take (default: ema)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the destination if it exists")
    parser.add_argument(
        "--config_file", help="bundle config whose network_def the weights must fit (default: release size)"
    )
    parser.add_argument(
        "--backbone",
        choices=sorted(BACKBONE_NAMES),
        help="r = Hermes-R, m = Hermes-M (default: recognised from the tensor names)",
    )
    add_network_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    overrides = network_overrides(args)
    written = convert(
        args.source, args.destination, args.state, args.overwrite, args.config_file, args.backbone, **overrides
    )
    weights = load_weights_only(written)
    count = sum(t.numel() for t in weights.values())
    print(
        f"wrote {written}: {len(weights)} tensors, {count:,} parameters ({args.state} weights of {args.source}; "
        f"{BACKBONE_NAMES[backbone_of(weights)]})"
    )
    return 0


if __name__ == "__main__":
    run_command(main)
