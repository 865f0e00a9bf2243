"""Evaluation result tables: one CSV row per (case, task) and a markdown summary of per-task means.

The CSV keeps every row (including absent structures and false positives); the markdown averages only the
rows whose label contains the structure (the published Hermes convention), so a dataset whose tumour is
missing from a case is not rewarded with Dice 1 for it.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..io.atomic import atomic_text, unused_path
from .metrics import STATUS_FALSE_POSITIVE, STATUS_MISSED, STATUS_OK

SPACES = ("native", "resampled")
METRICS = ("dice", "hd95_mm", "nsd")
CSV_COLUMNS = (
    "case",
    "image",
    "dataset",
    "modality",
    "task_id",
    "task",
    *(f"{space}_{field}" for space in SPACES for field in (*METRICS, "status", "label_voxels", "pred_voxels")),
    "native_spacing_mm",
    "resampled_spacing_mm",
    "error",
)


def _format_cell(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(f"{float(v):.6g}" for v in value)
    return "" if value is None else str(value)


def write_csv(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write rows (dicts keyed by ``CSV_COLUMNS``) to a new CSV file; returns the path actually written."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _format_cell(row.get(key)) for key in CSV_COLUMNS})
    return atomic_text(unused_path(path), buffer.getvalue(), overwrite=False)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _fmt(value: float, digits: int) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def task_summaries(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """Per dataset, per task: means over cases whose label holds the structure, plus failure counts."""
    grouped: dict[str, dict[tuple[int, str], list[dict]]] = {}
    for row in rows:
        if row.get("error"):
            continue
        grouped.setdefault(row["dataset"], {}).setdefault((int(row["task_id"]), row["task"]), []).append(row)
    summaries: dict[str, list[dict]] = {}
    for dataset in sorted(grouped):
        summaries[dataset] = []
        for (task_id, task), task_rows in sorted(grouped[dataset].items()):
            summary = {"task_id": task_id, "task": task, "cases": len(task_rows)}
            for space in SPACES:
                present = [r for r in task_rows if r[f"{space}_status"] in (STATUS_OK, STATUS_MISSED)]
                summary[f"{space}_labelled"] = len(present)
                for metric in METRICS:
                    summary[f"{space}_{metric}"] = _mean([float(r[f"{space}_{metric}"]) for r in present])
                summary[f"{space}_missed"] = sum(r[f"{space}_status"] == STATUS_MISSED for r in task_rows)
                false_positive = [r for r in task_rows if r[f"{space}_status"] == STATUS_FALSE_POSITIVE]
                summary[f"{space}_false_positive"] = len(false_positive)
            summaries[dataset].append(summary)
    return summaries


def dataset_means(summaries: dict[str, list[dict]]) -> dict[str, dict]:
    """Per dataset: unweighted mean of its task means (tasks never labelled in any case are left out)."""
    means = {}
    for dataset, tasks in summaries.items():
        entry = {"tasks": len(tasks), "cases": max((t["cases"] for t in tasks), default=0)}
        for space in SPACES:
            for metric in METRICS:
                entry[f"{space}_{metric}"] = _mean([t[f"{space}_{metric}"] for t in tasks])
        means[dataset] = entry
    return means


def markdown_report(rows: Sequence[dict], nsd_tolerance_mm: float, resampled_spacing_mm: Sequence[float]) -> str:
    """Markdown tables: per-dataset means, then per-task means for every dataset, then failed cases."""
    summaries = task_summaries(rows)
    means = dataset_means(summaries)
    spacing = "×".join(f"{float(s):g}" for s in resampled_spacing_mm)
    head = (
        f"| Dice native | HD95 native (mm) | NSD@{nsd_tolerance_mm:g}mm native "
        f"| Dice {spacing}mm | HD95 {spacing}mm (mm) | NSD@{nsd_tolerance_mm:g}mm {spacing}mm |"
    )
    lines = [
        "# Hermes evaluation",
        "",
        "Means over cases whose label contains the structure; HD95 means leave out missed structures "
        "(counted in the `missed` column). Dataset means are unweighted means of task means.",
        "",
        "## Per dataset",
        "",
        "| dataset | tasks | cases " + head,
        "|---|---:|---:" + "|---:" * 6 + "|",
    ]
    for dataset, entry in means.items():
        cells = [_fmt(entry[f"{s}_{m}"], 2 if m == "hd95_mm" else 4) for s in SPACES for m in METRICS]
        lines.append(f"| {dataset} | {entry['tasks']} | {entry['cases']} | " + " | ".join(cells) + " |")
    for dataset, tasks in summaries.items():
        lines += [
            "",
            f"## {dataset}",
            "",
            "| task id | task | labelled cases " + head + " missed | false positives |",
            "|---:|---|---:" + "|---:" * 8 + "|",
        ]
        for t in tasks:
            cells = [_fmt(t[f"{s}_{m}"], 2 if m == "hd95_mm" else 4) for s in SPACES for m in METRICS]
            lines.append(
                f"| {t['task_id']} | {t['task']} | {t['native_labelled']} | "
                + " | ".join(cells)
                + f" | {t['native_missed']} | {t['native_false_positive']} |"
            )
        entry = means[dataset]
        cells = [_fmt(entry[f"{s}_{m}"], 2 if m == "hd95_mm" else 4) for s in SPACES for m in METRICS]
        lines.append("| | **mean** | | " + " | ".join(cells) + " | | |")
    errors = sorted({(r["case"], r["error"]) for r in rows if r.get("error")})
    if errors:
        lines += ["", "## Cases not evaluated", ""] + [f"- `{case}`: {error}" for case, error in errors]
    return "\n".join(lines) + "\n"


def write_markdown(text: str, path: str | os.PathLike) -> Path:
    """Write the markdown report to a new file; returns the path actually written."""
    return atomic_text(unused_path(path), text, overwrite=False)
