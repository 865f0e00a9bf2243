"""Run the configured pieces case by case: a bad case is reported in one line and the others go on."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation
from torch import nn

from .errors import CaseError, SetupError, error_chain, one_line
from .modality import check_modality_choice
from .native import LabelAccumulator, invert_in_chunks, label_map_from, merge_groups
from .network import load_weights
from .overlay import save_overlay
from .sidecar import sidecar_content
from .summary import CaseOutcome, RunSummary
from .task_selection import TaskSelector
from .writers import CaseWriter, NativeGrid, OutputPaths, atomic_write, native_grid


def sliding_window_probabilities(
    data: dict[str, Any],
    inferer: Callable[..., torch.Tensor],
    segmenter: nn.Module,
    device: torch.device,
    low_precision_voxels: int = 2_000_000_000,
) -> torch.Tensor:
    """Per-task probabilities (n × D × H × W, on CPU) of one preprocessed case; shared by inference and evaluation.

    Past ``low_precision_voxels`` (tasks × voxels) on CUDA the windows are stitched in float16 to bound memory.
    """
    image = data["image"].as_tensor() if isinstance(data["image"], MetaTensor) else torch.as_tensor(data["image"])
    task_index = torch.as_tensor(data["task_index"]).reshape(-1)
    big = task_index.numel() * image[0].numel() > low_precision_voxels
    dtype = torch.float16 if big and device.type == "cuda" else torch.float32
    with torch.no_grad():
        out = inferer(
            image[None].to(device, dtype),
            segmenter,
            task_index[None].to(device),
            torch.as_tensor(data["modality_index"]).reshape(1).to(device),
        )
    return torch.as_tensor(out)[0].cpu()


class InferenceRunner:
    """The ``evaluator`` of configs/inference.json.

    ``dataset`` applies the declarative ``preprocessing`` (load, check, RAS, 1.5 mm, modality and task choice,
    intensity normalisation); ``inferer`` runs ``segmenter`` window by window; ``postprocessing`` (``Invertd``)
    brings probabilities back to the input's grid; ``writer`` saves them.
    """

    def __init__(
        self,
        dataset: Any,
        network: nn.Module,
        segmenter: nn.Module,
        inferer: Callable[..., torch.Tensor],
        postprocessing: Callable[[dict], dict],
        writer: CaseWriter,
        task_selector: TaskSelector,
        modality: str,
        ckpt_path: str,
        device: torch.device | str = "cpu",
        problems: Sequence[tuple[str, str]] = (),
        threshold: float = 0.5,
        invert_chunk: int = 4,
        low_precision_voxels: int = 2_000_000_000,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.dataset = dataset
        self.network = network
        self.segmenter = segmenter
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.writer = writer
        self.task_selector = task_selector
        self.modality = modality
        self.ckpt_path = ckpt_path
        self.device = torch.device(device)
        self.problems = list(problems)
        self.threshold = float(threshold)
        self.invert_chunk = int(invert_chunk)
        self.low_precision_voxels = int(low_precision_voxels)
        self.settings = dict(settings or {})
        self.weights: dict[str, str] = {}
        self.summary: RunSummary | None = None
        self.setup_error: str | None = None

    # --- whole run -------------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Segment every case; print progress and a summary. Never raises for a bad case or bad setting."""
        start = time.perf_counter()
        cases = list(self.dataset.data)
        summary = self.summary = RunSummary(total=len(cases) + len(self.problems))
        try:
            self.prepare()
        except (SetupError, ValueError) as err:
            self.setup_error = one_line(err)
            summary.say(f"error: {self.setup_error}")
            return summary
        summary.say(f"Segmenting {len(cases)} case(s) into {self.writer.output_dir} on {self.device} "
                    f"with weights {self.weights['path']}")
        for source, problem in self.problems:
            summary.record(CaseOutcome(source, False, 0.0, f"{source}: {problem}"))
        for index, case in enumerate(cases):
            began = time.perf_counter()
            try:
                detail, ok = self.run_case(index, case), True
            except Exception as err:  # any failure of one case: report it, go on with the next
                detail, ok = one_line(err), False
                if case["source"] not in detail:
                    detail = f"{case['source']}: {detail}"
            summary.record(CaseOutcome(case["source"], ok, time.perf_counter() - began, detail))
        summary.report(time.perf_counter() - start)
        return summary

    def prepare(self) -> None:
        """Check the settings and load the weights before touching any case."""
        check_modality_choice(self.modality)
        self.writer.check_options()
        self.task_selector.validate()
        sha = load_weights(self.network, self.ckpt_path)
        self.weights = {"path": str(Path(str(self.ckpt_path)).expanduser().resolve()), "sha256": sha}
        self.network.eval()

    def exit_if_failed(self) -> None:
        """Last step of ``monai.bundle run inference``: exit status 1 when the setup or any case failed."""
        if self.setup_error is not None or self.summary is None or self.summary.failed:
            raise SystemExit(1)

    # --- one case --------------------------------------------------------------------------------------------
    def predict(self, data: dict[str, Any]) -> torch.Tensor:
        """Per-task probabilities (n × D × H × W, on CPU) on the preprocessed grid."""
        return sliding_window_probabilities(data, self.inferer, self.segmenter, self.device, self.low_precision_voxels)

    def say(self, text: str) -> None:
        (self.summary or RunSummary()).say(text)

    def load_case(self, index: int, source: str) -> dict[str, Any]:
        """The preprocessed case; reading failures become one line naming the file."""
        try:
            return self.dataset[index]
        except CaseError:
            raise
        except Exception as err:
            if any(isinstance(e, CaseError) for e in error_chain(err)):
                raise
            raise CaseError(f"{source}: cannot read or preprocess the image ({one_line(err)})") from err

    def run_case(self, index: int, case: dict[str, Any]) -> str:
        """Segment one case and write its outputs; returns the line printed for it."""
        source, name = case["source"], case["name"]
        self.writer.check_free(source, self.writer.paths(name))  # before any work: nothing a user had is replaced
        data = self.load_case(index, source)
        groups = data["task_groups"]
        paths = self.writer.paths(name, groups)
        self.writer.check_free(source, paths)
        self.say(f"    {source}: modality {data['modality_name']} ({data['modality_source']}), "
                 f"{len(groups)} label(s) from {data['task_index'].numel()} task(s), "
                 f"network grid {tuple(data['image'].shape[1:])}")
        merged = merge_groups(self.predict(data), data["task_index"].tolist(), groups)
        grid = native_grid(case, data["native_affine"], data["native_shape"])
        labels = self.write_native(data["image"], merged, paths, grid)
        if paths.overlay is not None:
            self.write_overlay(paths.overlay, data["image"], merged, [g.name for g in groups], name)
        modality = {"name": data["modality_name"], "index": int(data["modality_index"]),
                    "source": data["modality_source"]}
        content = sidecar_content(case, groups, labels, modality, self.weights, paths, grid,
                                  {**self.settings, "threshold": self.threshold, "device": str(self.device)})
        self.writer.save_sidecar(paths.sidecar, content)  # last: a sidecar means the case is complete
        return f"{len(groups)} label(s), {int((labels > 0).sum())} voxel(s) labelled -> {paths.label_map}"

    def write_native(self, image: Any, merged: torch.Tensor, paths: OutputPaths, grid: NativeGrid) -> np.ndarray:
        """Invert a few labels at a time to the input's grid, writing masks/probabilities; returns the label map."""
        labels = LabelAccumulator(grid.shape, self.threshold, len(merged))
        for start, native in invert_in_chunks(self.postprocessing, image, merged, self.invert_chunk):
            labels.add(start, native)
            for offset, probability in enumerate(native):
                label = start + offset + 1
                if label in paths.masks:
                    self.writer.save_volume(paths.masks[label], (probability > self.threshold).astype(np.uint8), grid)
                if label in paths.probabilities:
                    self.writer.save_volume(paths.probabilities[label], probability.astype(np.float32), grid)
        self.writer.save_volume(paths.label_map, labels.labels, grid)
        return labels.labels

    def write_overlay(self, path: Path, image: Any, merged: torch.Tensor, names: list[str], title: str) -> None:
        """Quick-look PNG drawn on the network's 1.5 mm grid turned to RAS (same label rule, no resampling needed)."""
        view = label_map_from(merged.float().numpy(), self.threshold)
        affine = image.affine if isinstance(image, MetaTensor) else torch.eye(4)
        to_ras = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)[:1])
        picture = np.asarray(to_ras(MetaTensor(pixels, affine=affine))[0], dtype=np.float32)
        view = np.asarray(to_ras(MetaTensor(torch.from_numpy(view)[None], affine=affine))[0])
        atomic_write(path, lambda tmp: save_overlay(tmp, picture, view, names, title=title))
