"""Export Hermes weights for serving: an ONNX model (for onnxruntime and other ONNX runtimes) or a ``torch.export``
program (``.pt2``: ``torch.export.load``, AOTInductor), each checked against the eager network before it appears.

Run from the bundle folder::

    python -m scripts.export WEIGHTS --format onnx|pt2|onnx,pt2 [--out FILE] [--overwrite] [--check_size 128]
        [--task_registry_extra FILE ...] [--backbone r|m] [--base_channels N ...]

WEIGHTS is any file inference takes (the bundle's weights, a run checkpoint's EMA weights, the published checkpoint),
of either backbone (recognised from the tensor names). The network is built as ``configs/inference.json`` builds it:
the task registry (with the ``<weights>.tasks.json`` companion beside the weights and any ``--task_registry_extra``)
gives the task and modality rows, the rest is the release size unless an option says otherwise. (This is not
``scripts/training/export.py``, which turns a run checkpoint into a weights file.)

The exported graph is the eval-mode network returning the main segmentation logits only (what sliding-window
inference runs; no modality logits, no Hermes-M auxiliary output):

- ``image``: float32 ``B × 1 × D × H × W``, every side a multiple of 16 and at least 32; B, D, H, W are dynamic;
- ``task_index``: int64 ``B × T``, global task ids, ``-1`` pads (null token); T is dynamic;
- ``modality_index``: int64 ``B``; ``-1`` = MRI of unknown sequence;
- output ``seg_logits``: float32 ``B × T × D × H × W``.

The task list and modality table of the weights travel inside the file (ONNX metadata ``hermes``, the ``.pt2``
archive's extra file ``hermes.json``). The default output is WEIGHTS with the format's suffix (``models/model.onnx``,
``models/model.pt2``); an existing file is never replaced without ``--overwrite``. Each export is written under a
temporary name, loaded back (onnxruntime, ``torch.export.load``), run on a ``check_size``³ window with two task lists
and compared with the eager network; only an export within ``TOLERANCE`` is moved into place, and the measured error
is printed. A failure is one line (``error: ...``) and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint_names import BACKBONE_NAMES
from .convert_checkpoint import MEDFORMER_OPTIONS, NETWORK_OPTIONS, build_network
from .errors import HermesError, SetupError
from .io.atomic import OutputExistsError, atomic_write
from .registry import TaskRegistry, as_path_list, companions_of
from .weights import backbone_of_weights, load_weights

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
TASK_REGISTRY = BUNDLE_ROOT / "configs" / "task_registry.json"
#: Export format -> file suffix.
FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}
#: What the ONNX export needs beyond requirements of the bundle (pinned in requirements.txt and metadata.json).
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
INSTALL_HINT = "pip install onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0 (pinned in requirements.txt)"
INPUT_NAMES = ("image", "task_index", "modality_index")
OUTPUT_NAME = "seg_logits"
#: Each side: a multiple of the networks' size divisor, and at least two of them (torch.export specialises a side of
#: one divisor, where the deepest level is a single voxel).
SIZE_DIVISOR = 16
MIN_SIDE = 2 * SIZE_DIVISOR
#: An export passes when max |export - eager| <= TOLERANCE x max(1, max |eager|) on every check window.
TOLERANCE = 1e-4
DEFAULT_CHECK_SIZE = 128


class ExportCheckError(HermesError):
    """An exported model does not compute what the eager network computes."""


class SegmentationLogits(nn.Module):
    """The served graph: the eval-mode network's main segmentation logits."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval()

    def forward(self, image: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor) -> torch.Tensor:
        return self.network(image, task_index, modality_index, return_modality_logits=False)


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


# ------------------------------------------------------------------------------------------------------- writers
def write_pt2(program: torch.export.ExportedProgram, path: Path, metadata: str) -> None:
    torch.export.save(program, path, extra_files={"hermes.json": metadata})


def nested_mean_instance_norm(
    input: Any,
    weight: Any = None,
    bias: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    cudnn_enabled: bool = False,
) -> Any:
    """ONNX for ``aten.instance_norm`` (affine-free, input statistics: all of Hermes' norms) as means taken one axis
    at a time.

    onnxruntime's ``InstanceNormalization``, like one ``ReduceMean`` over a whole volume, accumulates in float32 in
    one run: on 2 M voxels (1 x 4 x 128³, mean 5, sd 3) it is off by 1.9e-4 of the normalised value (PyTorch: 5e-7
    against float64), which grew to 2.7e-3 on the logits of a 128³ window. Nested means sum at most one side per step
    and agree with PyTorch within 1e-6; mathematically the same norm.
    """
    from onnxscript import opset18 as op

    if weight is not None or bias is not None or not use_input_stats:
        raise SetupError("only affine-free instance norms with input statistics are exported (Hermes has no other)")
    rank = len(input.shape)

    def mean(x: Any) -> Any:
        for axis in range(rank - 1, 1, -1):
            x = op.ReduceMean(x, op.Constant(value_ints=[axis]), keepdims=1)
        return x

    centred = op.Sub(input, mean(input))
    variance = mean(op.Mul(centred, centred))
    return op.Div(centred, op.Sqrt(op.Add(variance, op.CastLike(op.Constant(value_float=eps), input))))


def axis_names(program: torch.export.ExportedProgram) -> dict[str, str]:
    """The traced program's shape symbols -> readable ONNX axis names: ``batch``, ``tasks``, ``depth``, ``height``,
    ``width`` (a side's 1/16 is ``depth_16``..., as inner tensors show it, e.g. ``8*depth_16``)."""
    shapes = {node.name: node.meta["val"].shape for node in program.graph.nodes if node.op == "placeholder"}
    image, task_index = (shapes[name] for name in program.graph_signature.user_inputs[:2])
    names = {}
    for name, dim in (
        ("batch", image[0]),
        ("depth", image[2]),
        ("height", image[3]),
        ("width", image[4]),
        ("tasks", task_index[1]),
    ):
        expr = dim.node.expr
        names.update({str(symbol): f"{name}_16" for symbol in expr.free_symbols if symbol != expr})
        names[str(expr)] = name
    return names


def write_onnx(program: torch.export.ExportedProgram, path: Path, metadata: str) -> None:
    """The dynamo exporter (``torch.onnx.export(..., dynamo=True)``, torch's default and only maintained ONNX
    exporter) from the traced program, instance norms as :func:`nested_mean_instance_norm`, axes named by
    :func:`axis_names`."""
    with _Quiet():
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            optimize=True,
            verbose=False,
            custom_translation_table={torch.ops.aten.instance_norm.default: nested_mean_instance_norm},
        )
    onnx_program.rename_axes(axis_names(program))
    onnx_program.model.metadata_props["hermes"] = metadata
    onnx_program.save(path, external_data=False)


def run_pt2(path: Path) -> Callable[..., np.ndarray]:
    module = torch.export.load(path).module()

    def run(image: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return module(image, task_index, modality_index).numpy()

    return run


def run_onnx(path: Path) -> Callable[..., np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(image: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor) -> np.ndarray:
        feed = dict(zip(INPUT_NAMES, (image.numpy(), task_index.numpy(), modality_index.numpy())))
        return session.run([OUTPUT_NAME], feed)[0]

    return run


@dataclass(frozen=True)
class Exporter:
    write: Callable[[torch.export.ExportedProgram, Path, str], None]
    runner: Callable[[Path], Callable[..., np.ndarray]]
    runtime: Callable[[], str]


def _onnxruntime_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


EXPORTERS = {
    "onnx": Exporter(write_onnx, run_onnx, _onnxruntime_version),
    "pt2": Exporter(write_pt2, run_pt2, lambda: f"torch.export.load (torch {torch.__version__})"),
}


# ------------------------------------------------------------------------------------------------------- the check
@dataclass(frozen=True)
class CheckResult:
    tasks: int
    max_abs_error: float
    scale: float

    @property
    def relative(self) -> float:
        return self.max_abs_error / max(1.0, self.scale)

    def as_text(self) -> str:
        return (
            f"{self.tasks} tasks: max |export - eager| {self.max_abs_error:.2e} (logit scale {self.scale:.3g}, "
            f"{self.relative:.1e} of max(1, scale))"
        )


class CheckWindows:
    """The eager network's outputs on one ``size``³ window, seeded, for two task lists: one task plus the null token,
    and up to twelve tasks plus the null token (the task count is a dynamic dimension of the export)."""

    def __init__(self, network: nn.Module, size: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.image = torch.randn(1, 1, size, size, size, generator=generator)
        num_tasks = int(network.num_tasks)
        self.cases = [
            (torch.tensor([[0, -1]]), torch.tensor([0])),
            (torch.tensor([list(range(min(num_tasks, 12))) + [-1]]), torch.tensor([-1])),
        ]
        with torch.no_grad():
            self.expected = [
                network(self.image, tasks, modality, return_modality_logits=False).numpy()
                for tasks, modality in self.cases
            ]

    def compare(self, run: Callable[..., np.ndarray]) -> list[CheckResult]:
        results = []
        for (tasks, modality), expected in zip(self.cases, self.expected):
            got = run(self.image, tasks, modality)
            if got.shape != expected.shape:
                raise ExportCheckError(f"the export returned shape {got.shape}, eager {expected.shape}")
            results.append(
                CheckResult(int(tasks.shape[1]), float(np.abs(got - expected).max()), float(np.abs(expected).max()))
            )
        return results


# ------------------------------------------------------------------------------------------------------- export
def parse_formats(value: str | Sequence[str]) -> list[str]:
    names = value.split(",") if isinstance(value, str) else list(value)
    formats = list(dict.fromkeys(name.strip().lower() for name in names if name.strip()))
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        shown = unknown[0] if unknown else value
        raise SetupError(f"--format: unknown format '{shown}' (choose onnx, pt2 or onnx,pt2)")
    return formats


def require_packages(formats: Iterable[str]) -> None:
    if "onnx" in formats:
        missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise SetupError(
                f"--format onnx needs the package{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}: {INSTALL_HINT}"
            )


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


def check_size_of(value: int) -> int:
    size = int(value)
    if size and (size < MIN_SIDE or size % SIZE_DIVISOR):
        raise SetupError(
            f"--check_size: {value} is not a multiple of {SIZE_DIVISOR} of at least {MIN_SIDE} (0 skips the check)"
        )
    return size


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
        "output": f"{OUTPUT_NAME}: float32 B x T x D x H x W logits (sigmoid > 0.5 = the task's mask)",
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
        program = trace(SegmentationLogits(network))
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    options = (*NETWORK_OPTIONS, *MEDFORMER_OPTIONS)
    overrides = {name: getattr(args, name) for name in options if getattr(args, name) is not None}
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


if __name__ == "__main__":
    sys.exit(main())
