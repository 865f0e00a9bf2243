"""The inference step of the case engine: segment one case and write its outputs on the input's grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CaseError
from ..predict import channel_layout
from ..weights import LoadedWeights
from .inputs import described
from .native import label_map_from, write_native
from .overlay import draw_case_overlay
from .reading import CasePrediction
from .sidecar import sidecar_content
from .task_selection import TaskGroup, TaskSelector, contexts_of, merge_groups
from .writers import CaseWriter, OutputPaths, native_grid


class SegmentCase:
    """Read a case, choose its tasks, predict them in their datasets' contexts, invert to the input's grid and commit
    its outputs.

    Args:
        prediction: the reading, weights and sliding-window prediction shared with evaluation.
        task_selector: turns ``--tasks`` into output labels for the case's modality.
        postprocessing: MONAI ``Invertd`` back to the input's grid.
        writer: output names, completeness, staging.
        settings: recorded in every sidecar.
    """

    continue_hint = "run the same command again with --skip_existing true"

    def __init__(
        self,
        prediction: CasePrediction,
        task_selector: TaskSelector,
        postprocessing: Callable[[dict], dict],
        writer: CaseWriter,
        threshold: float = 0.5,
        invert_chunk: int = 4,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.prediction = prediction
        self.task_selector = task_selector
        self.postprocessing = postprocessing
        self.writer = writer
        self.threshold = float(threshold)
        self.invert_chunk = int(invert_chunk)
        self.settings = dict(settings or {})

    def prepare(self) -> str:
        self.task_selector.validate()
        self.writer.prepare()
        self.prediction.load()
        return f"Segmenting into {self.writer.output_dir} {self.prediction.describe()}"

    def complete(self, engine: Any) -> None:
        """Nothing to add after the last case: each case's files are complete when it is done."""

    def release(self) -> None:
        self.writer.folder.release()

    def __call__(self, case: dict[str, Any]) -> str:
        case = described(case)
        source, name = case["source"], case["name"]
        replaces = self.writer.check(source, name)  # before any work: nothing a user had is replaced unasked
        data = self.prediction.read(case)
        try:
            groups = self.task_selector.resolve(data["modality_name"])
        except CaseError as err:
            raise CaseError(f"{source}: {err}") from err
        contexts = contexts_of(groups, self.task_selector.registry)
        merged = merge_groups(self.prediction.probabilities(data, contexts), channel_layout(contexts), groups)
        settings = {**self.settings, "threshold": self.threshold, "device": str(self.prediction.device)}
        labels, paths = write_case(
            self.writer,
            case,
            data,
            groups,
            merged,
            replaces,
            self.postprocessing,
            self.prediction.weights,
            settings,
            self.invert_chunk,
        )
        tasks = sum(len(g.members) for g in groups)
        return (
            f"modality {data['modality_name']} ({data['modality_source']}), {len(groups)} label(s) from "
            f"{tasks} task(s) in {len(contexts)} pass(es) per window, {int((labels > 0).sum())} voxel(s) "
            f"labelled -> {paths.label_map}"
        )


def write_case(
    writer: CaseWriter,
    case: dict[str, Any],
    data: dict[str, Any],
    groups: Sequence[TaskGroup],
    merged: torch.Tensor,
    replaces: Sequence[Path],
    postprocessing: Callable[[dict], dict],
    weights: LoadedWeights | None,
    settings: dict[str, Any],
    invert_chunk: int = 4,
) -> tuple[np.ndarray, OutputPaths]:
    """Stage every output of a case (label map, optional masks, probabilities, overlay), the sidecar last, and
    commit them together; returns the label map on the input's grid and the paths written."""
    threshold = float(settings.get("threshold", 0.5))
    paths = writer.paths(case["name"], groups)
    grid = native_grid(case, data["native_affine"], data["native_shape"])
    output = writer.open(case["name"], replaces)
    try:
        labels = write_native(output, paths, grid, data["image"], merged, postprocessing, threshold, invert_chunk)
        if paths.overlay is not None:
            view = label_map_from(merged.float().numpy(), threshold)
            names = [g.name for g in groups]
            output.picture(paths.overlay, lambda tmp: draw_case_overlay(tmp, data["image"], view, names, case["name"]))
        modality = {
            "name": data["modality_name"],
            "index": int(data["modality_index"]),
            "source": data["modality_source"],
        }
        output.sidecar(
            paths.sidecar,
            sidecar_content(
                case, groups, labels, modality, weights.as_json() if weights else {}, paths, grid, settings
            ),
        )
        output.commit()
    finally:
        output.discard()
    return labels, paths
