"""Labelled cases for the evaluate workflow, read by the one datalist reader; bad items are reported and left out.

Unlike training, one bad case must not stop an evaluation of hundreds: unusable items become ``(source, reason)``
problems that the case engine reports (and the tables list), repeated items are scored once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..data.datalist import DatalistError, read_datalist
from ..errors import SetupError
from ..io.naming import assign_case_names
from ..registry import TaskRegistry

#: Key under which an evaluation item carries its label file; kept apart from "label" so that the inference
#: reading leaves it alone (the scorer loads it on the image's own grid).
LABEL_FILE_KEY = "label_file"


@dataclass
class EvaluationCases:
    """The usable items of one datalist section, the unusable ones as ``(source, reason)``, and the repeats."""

    items: list[dict[str, Any]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    repeats: list[str] = field(default_factory=list)
    datasets: dict[str, str] = field(default_factory=dict)  # source -> dataset, for the tables
    error: str | None = None  # the datalist cannot be used at all; reported when the run starts

    def check(self) -> None:
        if self.error:
            raise SetupError(self.error)


def evaluation_cases(
    datalist: str | os.PathLike | None, registry: TaskRegistry, section: str = "testing"
) -> EvaluationCases:
    """Read ``section`` of ``datalist``. Never raises while the bundle config resolves (Model Zoo tools inspect the
    workflow without a datalist): a datalist that cannot be used at all is kept in ``error`` for the run to report."""
    if datalist in (None, ""):
        return EvaluationCases(
            error="no datalist given: pass --datalist PATH (a decathlon-style JSON whose items "
            "have 'image', 'label' and 'dataset')"
        )
    try:
        read = read_datalist(datalist, registry, [section], require_label=True)
    except DatalistError as err:
        return EvaluationCases(error=str(err))
    found = EvaluationCases(repeats=[str(r) for r in read.repeats])
    for problem in read.problems:
        if problem.index < 0:
            return EvaluationCases(error=f"datalist {datalist}: {problem}; choose the section with --eval_section")
        found.problems.append((problem.image, f"{section} item {problem.index}: {problem.message}"))
        found.datasets.setdefault(problem.image, problem.dataset)
    for item in read.section(section):
        item = dict(item)
        item[LABEL_FILE_KEY] = item.pop("label")
        item["source"] = item["image"]
        item["modality"] = registry.dataset_modality(item["dataset"], item.get("modality"))
        found.items.append(item)
        found.datasets[item["source"]] = item["dataset"]
    assign_case_names(found.items)
    for item in found.items:
        item["case"] = item["name"]
    return found
