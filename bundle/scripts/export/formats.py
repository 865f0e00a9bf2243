"""Writing a traced program as ONNX or ``.pt2`` and running the written file back, one ``Exporter`` per format."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SetupError
from .graph import INPUT_NAMES, OUTPUT_NAMES, _Quiet

#: Export format -> file suffix.
FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}
#: What the ONNX export needs beyond requirements of the bundle (pinned in requirements.txt and metadata.json).
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
INSTALL_HINT = "pip install onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0 (pinned in requirements.txt)"


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
            output_names=list(OUTPUT_NAMES),
            optimize=True,
            verbose=False,
            custom_translation_table={torch.ops.aten.instance_norm.default: nested_mean_instance_norm},
        )
    onnx_program.rename_axes(axis_names(program))
    onnx_program.model.metadata_props["hermes"] = metadata
    onnx_program.save(path, external_data=False)


#: A loaded export: (image, task_index, modality_index) -> its outputs in ``OUTPUT_NAMES`` order.
Runner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[np.ndarray, ...]]


def run_pt2(path: Path) -> Runner:
    module = torch.export.load(path).module()

    def run(image: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            return tuple(output.numpy() for output in module(image, task_index, modality_index))

    return run


def run_onnx(path: Path) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(image: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor) -> tuple[np.ndarray, ...]:
        feed = dict(zip(INPUT_NAMES, (image.numpy(), task_index.numpy(), modality_index.numpy())))
        return tuple(session.run(list(OUTPUT_NAMES), feed))

    return run


@dataclass(frozen=True)
class Exporter:
    write: Callable[[torch.export.ExportedProgram, Path, str], None]
    runner: Callable[[Path], Runner]
    runtime: Callable[[], str]


def _onnxruntime_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


EXPORTERS = {
    "onnx": Exporter(write_onnx, run_onnx, _onnxruntime_version),
    "pt2": Exporter(write_pt2, run_pt2, lambda: f"torch.export.load (torch {torch.__version__})"),
}


def require_packages(formats: Iterable[str]) -> None:
    if "onnx" in formats:
        missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise SetupError(
                f"--format onnx needs the package{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}: {INSTALL_HINT}"
            )
