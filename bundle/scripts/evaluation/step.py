"""The evaluation step of the case engine: predict a labelled case exactly as inference does, then score it.

After the last case the tables are written (never over earlier ones) and the per-dataset mean Dice goes into the
engine's metrics, where ``--tracking mlflow`` picks it up. With ``--statistics true`` the reference labels get the
per-structure statistics inference writes for its results (``statistics.csv``, the same columns).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cases.predict import CasePredictor
from ..cases.read import CaseReader
from ..cases.segment import draw_overlay
from ..cases.statistics import case_intensities, statistics_rows, structure_statistics, write_statistics_csv
from ..cases.write import CaseWriter
from ..inference.inputs import described
from ..inference.task_selection import TaskGroup
from ..io.naming import case_name
from ..io.output_folder import OutputFolder
from ..predict import dataset_contexts
from ..registry import TaskRegistry
from .cases import LABEL_FILE_KEY, EvaluationCases
from .scoring import CaseScorer
from .tables import dataset_means, markdown_report, task_summaries, write_csv, write_markdown


class EvaluateCase:
    """Score one labelled case in native and resampled space; optionally keep its predictions.

    Args:
        cases: the checked datalist section (its problems are listed in the tables as errors).
        reader, predictor: inference's reading and prediction, so evaluation measures what inference produces; each
            case runs in its dataset's task context.
        scorer: the case's probabilities -> metric rows.
        output_dir: ``metrics.csv`` and ``metrics.md`` (earlier files are kept: new names ``metrics_1.csv``...).
        prediction_writer: writes each case's outputs as inference would (``--save_predictions true``), or None.
        statistics: per-structure statistics of each case's reference labels with the input's values, which
            ``intensities`` (the inference's reading transforms) reads again from the source.
    """

    continue_hint = "run the evaluation again (earlier metric files are kept; new ones get a new name)"

    def __init__(
        self,
        cases: EvaluationCases,
        reader: CaseReader,
        predictor: CasePredictor,
        registry: TaskRegistry,
        scorer: CaseScorer,
        output_dir: str,
        prediction_writer: CaseWriter | None = None,
        settings: dict[str, Any] | None = None,
        file_stem: str = "metrics",
        statistics: bool = False,
        intensities: Callable[[dict], dict] | None = None,
    ) -> None:
        self.cases = cases
        self.reader = reader
        self.predictor = predictor
        self.registry = registry
        self.scorer = scorer
        self.folder = OutputFolder(output_dir)
        self.prediction_writer = prediction_writer
        self.settings = dict(settings or {})
        self.file_stem = file_stem
        self.rows: list[dict[str, Any]] = []
        self.statistics = bool(statistics) and intensities is not None
        self.intensities = intensities
        self.statistics_rows: list[dict[str, Any]] = []
        self.written: dict[str, Path] = {}

    def prepare(self) -> str:
        self.cases.check()
        self.folder.claim()
        if self.prediction_writer is not None:
            self.prediction_writer.prepare()
        self.reader.modality.check()
        self.predictor.load()
        return f"Evaluating {len(self.cases.items)} case(s) {self.predictor.describe()}"

    def begin(self, cases: Sequence[dict[str, Any]]) -> None:
        """Cases run one after another: the scores are gathered in the step, not written in the background."""

    def __call__(self, item: dict[str, Any]) -> str:
        item = described(item)
        replaces = self.prediction_writer.check(item["source"], item["name"]) if self.prediction_writer else []
        case = self.reader(item)
        context = dataset_contexts(self.registry, [item["dataset"]])  # the dataset's tasks + a null, as trained
        probs = self.predictor.probabilities(case, context).float()
        rows = self.scorer.score(case, probs, self.predictor)
        if self.statistics:
            self.statistics_rows.extend(self.reference_statistics(case))
        if self.prediction_writer is not None:
            groups = [
                TaskGroup(label=k + 1, name=task.name, members=(task,))
                for k, task in enumerate(self.registry.tasks_of(item["dataset"]))
            ]
            writer = self.prediction_writer
            result = self.predictor.result(
                case, groups, probs, masks=writer.save_task_masks, network_labels=writer.save_overlay
            )
            result.settings = {
                **self.settings,
                "threshold": self.predictor.threshold,
                "device": str(self.predictor.device),
            }
            weights = self.predictor.weights.as_json() if self.predictor.weights else {}
            writer.write(result, replaces, weights, draw_overlay)
        self.rows.extend(rows)
        dice = ", ".join(f"{r['task']} {r['native_dice']:.3f}" for r in rows)
        return f"{item['dataset']}: native Dice {dice}"

    def reference_statistics(self, case: Any) -> list[dict[str, Any]]:
        """The statistics rows of the case's reference labels (one per task of its dataset)."""
        assert self.intensities is not None
        labels = np.asarray(self.scorer.load_label(case.item[LABEL_FILE_KEY])[0]).astype(np.int64)
        values, unit = case_intensities(self.intensities, case)
        names = {task.label: task.name for task in self.registry.tasks_of(case.item["dataset"])}
        statistics = structure_statistics(labels, values, case.native.affine, names, unit)
        return statistics_rows(case.item["case"], statistics)

    def complete(self, engine: Any) -> None:
        """Write the tables (failed cases listed with their reason) and report the per-dataset means."""
        for outcome in engine.summary.failed:
            dataset = self.cases.datasets.get(outcome.source, "")
            self.rows.append(
                {
                    "case": _case_name(outcome.source, self.cases),
                    "image": outcome.source,
                    "dataset": dataset,
                    "task_id": "",
                    "task": "",
                    "error": outcome.detail,
                }
            )
        report = markdown_report(self.rows, self.scorer.nsd_tolerance_mm, self._resampled_spacing())
        self.written = {
            "csv": write_csv(self.rows, self.folder.path / f"{self.file_stem}.csv"),
            "markdown": write_markdown(report, self.folder.path / f"{self.file_stem}.md"),
        }
        for dataset, entry in dataset_means(task_summaries(self.rows)).items():
            engine.summary.say(
                f"  {dataset}: mean Dice native {entry['native_dice']:.4f}, resampled "
                f"{entry['resampled_dice']:.4f} ({entry['tasks']} task(s))"
            )
            for space in ("native", "resampled"):
                if not math.isnan(entry[f"{space}_dice"]):
                    engine.state.metrics[f"mean_dice_{space}/{dataset}"] = float(entry[f"{space}_dice"])
        if self.statistics and self.statistics_rows:
            self.written["statistics"] = write_statistics_csv(self.statistics_rows, self.folder.path / "statistics.csv")
        engine.summary.say(f"Results: {', '.join(str(path) for path in self.written.values())}")

    def release(self) -> None:
        self.folder.release()
        if self.prediction_writer is not None:
            self.prediction_writer.folder.release()

    def _resampled_spacing(self) -> Sequence[float]:
        for row in self.rows:
            if not row.get("error") and row.get("resampled_spacing_mm"):
                return row["resampled_spacing_mm"]
        return (math.nan,) * 3


def _case_name(source: str, cases: EvaluationCases) -> str:
    for item in cases.items:
        if item["source"] == source:
            return item["case"]
    return case_name(source)
