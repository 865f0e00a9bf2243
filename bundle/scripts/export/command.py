"""``python -m scripts.export``: build the network the weights need, trace it, write and check each format."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint_names import BACKBONE_NAMES
from ..convert_checkpoint import MEDFORMER_OPTIONS, add_network_options, build_network, network_overrides
from ..errors import SetupError
from ..io.atomic import OutputExistsError, atomic_write
from ..registry import TaskRegistry, as_path_list, companions_of
from ..weights import backbone_of_weights, load_weights
from .check import DEFAULT_CHECK_SIZE, TOLERANCE, CheckResult, CheckWindows, ExportCheckError, check_size_of
from .formats import EXPORTERS, FORMATS, require_packages
from .graph import MIN_SIDE, SIZE_DIVISOR, ServedNetwork, _Quiet, trace

TASK_REGISTRY = Path(__file__).resolve().parents[2] / "configs" / "task_registry.json"


def parse_formats(value: str | Sequence[str]) -> list[str]:
    names = value.split(",") if isinstance(value, str) else list(value)
    formats = list(dict.fromkeys(name.strip().lower() for name in names if name.strip()))
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        shown = unknown[0] if unknown else value
        raise SetupError(f"--format: unknown format '{shown}' (choose onnx, pt2 or onnx,pt2)")
    return formats


def targets(weights: Path, formats: list[str], out: str | None, overwrite: bool) -> dict[str, Path]:
    """Where each format goes, refused now (before any work) if it exists and may not be replaced."""
    if out is not None and len(formats) > 1:
        raise SetupError(
            "--out names one file: give one --format, or leave --out out to write WEIGHTS with each format's suffix"
        )
    paths = {fmt: Path(out).expanduser() if out is not None else weights.with_suffix(FORMATS[fmt]) for fmt in formats}
    for path in paths.values():
        if path.resolve() == weights.resolve():
            raise SetupError(f"--out {path} is the weights file itself; choose another name")
        if path.is_dir():
            raise SetupError(f"--out {path} is a folder; give the file to write")
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    return paths


def build(
    weights: Path, backbone: str | None, task_registry_extra: Any, overrides: dict[str, int]
) -> tuple[nn.Module, dict[str, Any]]:
    """The eval-mode network of ``weights`` (as inference builds it) and what the export records about it."""
    registry = TaskRegistry.load(TASK_REGISTRY, companions_of(weights) + as_path_list(task_registry_extra))
    backbone = backbone or backbone_of_weights(weights)
    misplaced = sorted(set(overrides) & set(MEDFORMER_OPTIONS)) if backbone != "m" else []
    if misplaced:
        raise SetupError(
            f"--{misplaced[0]} is an option of {BACKBONE_NAMES['m']}, but {weights} holds "
            f"{BACKBONE_NAMES[backbone]} weights"
        )
    options = {"num_tasks": registry.num_tasks, "num_modalities": registry.num_modalities, **overrides}
    network = build_network(None, options, backbone).eval()
    loaded = load_weights(network, weights)
    record = {
        "exported_by": "hermes_universal_segmentation scripts.export",
        "backbone": BACKBONE_NAMES[backbone],
        "weights": loaded.as_json(),
        "inputs": {
            "image": f"float32 B x 1 x D x H x W, sides multiples of {SIZE_DIVISOR}, at least {MIN_SIDE}",
            "task_index": "int64 B x T, global task ids, -1 = null token",
            "modality_index": "int64 B, modality ids, -1 = MRI of unknown sequence",
        },
        "outputs": {
            "seg_logits": "float32 B x T x D x H x W logits (sigmoid > 0.5 = the task's mask)",
            "modality_logits": "float32 B x M logits of the modality head; class k is the modality whose prior row "
            "is k (modalities below; the last class is MRI of unknown sequence). To ask which modality an image is, "
            "run a window with task_index [[-1]] and modality_index [-1], as the bundle's inference does",
        },
        "tasks": [{"id": t.id, "dataset": t.dataset, "name": t.name, "label": t.label} for t in registry.tasks],
        "modalities": registry.modalities,
    }
    return network, record


def write_checked(
    fmt: str,
    program: torch.export.ExportedProgram,
    path: Path,
    metadata: str,
    windows: CheckWindows | None,
    overwrite: bool,
) -> tuple[Path, list[CheckResult]]:
    """Write ``program`` in format ``fmt`` under a temporary name, check it there, and only then move it to ``path``."""
    exporter, results = EXPORTERS[fmt], []

    def write_and_check(tmp: Path) -> None:
        exporter.write(program, tmp, metadata)
        if windows is not None:
            results.extend(windows.compare(exporter.runner(tmp)))
            worst = max(results, key=lambda r: r.relative)
            if worst.relative > TOLERANCE:
                size = windows.image.shape[-1]
                raise ExportCheckError(
                    f"the {fmt} export differs from the eager network on a {size}^3 window beyond "
                    f"tolerance {TOLERANCE:g} ({worst.as_text()}); {path} not written"
                )

    return atomic_write(path, write_and_check, overwrite=overwrite), results


def export(
    weights: str | Path,
    formats: str | Sequence[str] = "onnx",
    out: str | None = None,
    overwrite: bool = False,
    check_size: int = DEFAULT_CHECK_SIZE,
    backbone: str | None = None,
    task_registry_extra: Any = None,
    report: Callable[[str], None] = print,
    **overrides: int,
) -> dict[str, tuple[Path, list[CheckResult]]]:
    """Export ``weights`` in each format; returns format -> (written path, the check's results)."""
    weights = Path(str(weights)).expanduser()
    formats = parse_formats(formats)
    check_size = check_size_of(check_size)
    require_packages(formats)
    paths = targets(weights, formats, out, overwrite)
    network, record = build(weights, backbone, task_registry_extra, overrides)
    metadata = json.dumps(record)
    windows = CheckWindows(network, check_size) if check_size else None
    started = time.perf_counter()
    with _Quiet():
        program = trace(ServedNetwork(network))
    report(f"traced {record['backbone']} with torch.export in {time.perf_counter() - started:.0f} s")
    written = {}
    for fmt in formats:
        started = time.perf_counter()
        path, results = write_checked(fmt, program, paths[fmt], metadata, windows, overwrite)
        seconds = time.perf_counter() - started
        report(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {record['backbone']}, {fmt}) in {seconds:.0f} s")
        if windows is not None:
            report(
                f"  checked with {EXPORTERS[fmt].runtime()} against eager on a 1x1x{check_size}x{check_size}x"
                f"{check_size} window (tolerance {TOLERANCE:g} of max(1, logit scale)):"
            )
            for result in results:
                report(f"    {result.as_text()}")
        written[fmt] = (path, results)
    return written


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.export",
        description="Export Hermes weights to ONNX or a torch.export program, checked against the eager network.",
    )
    parser.add_argument("weights", help="weights file (models/model.pt, a run checkpoint or the published checkpoint)")
    parser.add_argument("--format", default="onnx", help="onnx, pt2, or onnx,pt2 (default: onnx)")
    parser.add_argument("--out", help="output file (default: WEIGHTS with the suffix .onnx or .pt2)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    parser.add_argument(
        "--check_size",
        type=int,
        default=DEFAULT_CHECK_SIZE,
        help=f"side of the cubic window the export is checked on (default {DEFAULT_CHECK_SIZE}; 0 skips the check)",
    )
    parser.add_argument(
        "--backbone",
        choices=sorted(BACKBONE_NAMES),
        help="r = Hermes-R, m = Hermes-M (default: recognised from the tensor names)",
    )
    parser.add_argument(
        "--task_registry_extra",
        nargs="*",
        default=None,
        help="extra task registry files (the weights' <stem>.tasks.json is read by itself)",
    )
    add_network_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    overrides = network_overrides(args)
    export(
        args.weights,
        args.format,
        args.out,
        args.overwrite,
        args.check_size,
        args.backbone,
        args.task_registry_extra,
        **overrides,
    )
    return 0
