"""The ``evaluator`` of configs/evaluate.json: segment every labelled case, score it, write the tables.

The pieces come from configs/inference.json (network, weights, preprocessing, sliding-window inferer, the
``Invertd`` postprocessing), so evaluation measures exactly what inference produces. A case that fails (unreadable
image, label on another grid) is logged, listed in the tables, and the run goes on; the command exits with status 1
at the end when any case failed.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..inference.errors import SetupError, one_line
from ..inference.network import load_weights
from ..inference.runner import sliding_window_probabilities
from .cases import EvaluationCases
from .scoring import CaseScorer
from .tables import dataset_means, markdown_report, task_summaries, write_csv, write_markdown



def say(text: str) -> None:
    """One line for the person running the command (stdout, as the inference workflow reports)."""
    print(text, file=sys.stdout, flush=True)


class EvaluationRunner:
    """Run inference on ``cases`` one by one and collect per-(case, task) metrics.

    Args:
        dataset: MONAI ``Dataset`` over ``cases.items`` with the inference preprocessing.
        cases: the checked datalist section (its skipped items are reported as errors).
        network: the Hermes network (weights are loaded from ``ckpt_path`` first).
        segmenter: per-task probabilities of ``network`` (the inference ``segmenter``).
        inferer: the inference sliding-window inferer.
        scorer: turns a case's probabilities into metric rows.
        output_dir: where ``metrics.csv`` and ``metrics.md`` go (never replacing earlier files).
        ckpt_path: model weights (a plain state dict).
        device: where the network runs.
    """

    def __init__(
        self,
        dataset: Any,
        cases: EvaluationCases,
        network: nn.Module,
        segmenter: nn.Module,
        inferer: Callable[..., torch.Tensor],
        scorer: CaseScorer,
        output_dir: str,
        ckpt_path: str,
        device: torch.device | str = "cpu",
        file_stem: str = "metrics",
    ) -> None:
        self.dataset = dataset
        self.cases = cases
        self.network = network
        self.segmenter = segmenter
        self.inferer = inferer
        self.scorer = scorer
        self.output_dir = Path(str(output_dir))
        self.ckpt_path = ckpt_path
        self.device = torch.device(device)
        self.file_stem = file_stem
        self.rows: list[dict[str, Any]] = []
        self.written: dict[str, Path] = {}
        self.failed: list[str] = []

    def run(self) -> dict[str, Path]:
        """Evaluate every case; returns the paths of the CSV and markdown files."""
        start = time.perf_counter()
        if self.cases.error:
            raise SystemExit(f"error: {self.cases.error}")
        try:
            load_weights(self.network, self.ckpt_path)
        except SetupError as err:
            raise SystemExit(f"error: {one_line(err)}") from None
        self.network.eval()
        self.rows = [skipped.as_row() for skipped in self.cases.skipped]
        self.failed = [skipped.case for skipped in self.cases.skipped]
        items = list(self.dataset.data)
        say(f"Evaluating {len(items)} case(s) on {self.device} with weights {self.ckpt_path}")
        for skipped in self.cases.skipped:
            say(f"[-] SKIPPED {skipped.case}: {skipped.error}")
        for index, item in enumerate(items):
            began = time.perf_counter()
            try:
                rows = self.evaluate_case(index, item)
            except Exception as err:  # one bad case is reported; the others still count
                message = one_line(err)
                if item["image"] not in message:
                    message = f"{item['image']}: {message}"
                say(f"[{index + 1}/{len(items)}] FAILED {item['case']}: {message}")
                self.rows.append({"case": item["case"], "image": item["image"], "dataset": item["dataset"],
                                  "task_id": "", "task": "", "error": message})
                self.failed.append(item["case"])
                continue
            self.rows.extend(rows)
            dice = ", ".join(f"{r['task']} {r['native_dice']:.3f}" for r in rows)
            say(f"[{index + 1}/{len(items)}] done {item['case']} ({item['dataset']}, "
                f"{time.perf_counter() - began:.1f} s): native Dice {dice}")
        self.write()
        evaluated = len(items) - (len(self.failed) - len(self.cases.skipped))
        say(f"Summary: {evaluated} case(s) evaluated, {len(self.failed)} failed or skipped, "
            f"{time.perf_counter() - start:.1f} s; results: {self.written['csv']}, {self.written['markdown']}")
        return self.written

    def predict(self, data: dict[str, Any]) -> torch.Tensor:
        """Per-task probabilities (n × network grid, CPU float32), exactly as inference computes them."""
        return sliding_window_probabilities(data, self.inferer, self.segmenter, self.device).float()

    def evaluate_case(self, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        data = self.dataset[index]
        return self.scorer.score(item, data, self.predict(data))

    def write(self) -> dict[str, Path]:
        report = markdown_report(self.rows, self.scorer.nsd_tolerance_mm, self._resampled_spacing())
        self.written = {
            "csv": write_csv(self.rows, self.output_dir / f"{self.file_stem}.csv"),
            "markdown": write_markdown(report, self.output_dir / f"{self.file_stem}.md"),
        }
        for dataset, entry in dataset_means(task_summaries(self.rows)).items():
            say(f"  {dataset}: mean Dice native {entry['native_dice']:.4f}, resampled {entry['resampled_dice']:.4f} "
                f"({entry['tasks']} task(s))")
        return self.written

    def _resampled_spacing(self) -> Sequence[float]:
        for row in self.rows:
            if not row.get("error") and row.get("resampled_spacing_mm"):
                return row["resampled_spacing_mm"]
        return (math.nan,) * 3

    def exit_if_failed(self) -> None:
        """Last step of ``monai.bundle run evaluate``: exit status 1 when any case could not be evaluated."""
        if self.failed:
            raise SystemExit(1)
