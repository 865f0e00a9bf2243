"""Labelled cases for the evaluate workflow: checked up front, bad ones reported and left out.

Uses ``scripts.datalist.load_datalist`` (the training loader) so evaluation accepts exactly the datalists training
does and every item gains ``task_index`` (its dataset's tasks), ``task_label_values`` and ``modality_index``. Unlike
training, one bad case must not stop an evaluation of hundreds: when the section has problems, the items are
checked one at a time and each unusable one becomes a ``SkippedCase`` that the results tables list.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..datalist import DatalistError, load_datalist
from ..task_registry import TaskRegistry

#: Key under which an evaluation item carries its label file; kept apart from "label" so that the
#: inference preprocessing and batch preparation leave it alone (the writer loads it on the image's grid).
LABEL_FILE_KEY = "label_file"
_ONE_ITEM_PREFIX = re.compile(r"^item 0 \(image .*?\): ")


@dataclass(frozen=True)
class SkippedCase:
    """A datalist item that could not be evaluated, and why."""

    case: str
    dataset: str
    error: str

    def as_row(self) -> dict[str, Any]:
        return {"case": self.case, "dataset": self.dataset, "task_id": "", "task": "", "error": self.error}


def case_name(image_path: str) -> str:
    """The image file name without its extension(s), used as the case id in the results."""
    name = Path(str(image_path).rstrip("/")).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _as_registry(registry: TaskRegistry | str | os.PathLike, extra_registries: Any = ()) -> TaskRegistry:
    if isinstance(registry, TaskRegistry):
        return registry
    extras = [] if extra_registries in (None, "", ()) else extra_registries
    return TaskRegistry.load(registry, extras)


def _for_evaluation(item: dict[str, Any], registry: TaskRegistry) -> dict[str, Any]:
    """Move the label path aside and name the modality, so the inference preprocessing never guesses it."""
    item = dict(item)
    item[LABEL_FILE_KEY] = item.pop("label")
    item["case"] = case_name(item["image"])
    if not item.get("modality"):
        names = {index: name for name, index in registry.modalities.items()}
        item["modality"] = names[int(item["modality_index"])]
    return item


class EvaluationCases:
    """The usable items of one datalist section and the skipped ones (built once per run).

    Never raises while the bundle config is being resolved: a datalist that cannot be used at all (no file, bad
    JSON, no usable case) is kept in ``error`` and reported by the evaluation runner as one line.
    """

    def __init__(
        self,
        datalist: str | os.PathLike | None,
        registry: TaskRegistry | str | os.PathLike,
        section: str = "testing",
        extra_registries: Any = (),
    ) -> None:
        self.registry = _as_registry(registry, extra_registries)
        self.datalist = Path(str(datalist)) if datalist not in (None, "") else None
        self.section = section
        self.items: list[dict[str, Any]] = []
        self.skipped: list[SkippedCase] = []
        self.error: str | None = None
        try:
            self.items, self.skipped = self._load()
        except DatalistError as err:
            self.error = str(err).replace("\n  - ", "; ")
            return
        if not self.items:
            problems = "; ".join(f"{s.case}: {s.error}" for s in self.skipped) or "the section is empty"
            self.error = f"datalist {self.datalist}, section '{section}': no case can be evaluated ({problems})"

    def _load(self) -> tuple[list[dict[str, Any]], list[SkippedCase]]:
        if self.datalist is None:
            raise DatalistError("no datalist given: pass --datalist PATH (a decathlon-style JSON whose items have "
                                "'image', 'label' and 'dataset')")
        try:
            items = load_datalist(self.datalist, self.registry, section=self.section)
        except DatalistError:
            raw_items = self._raw_items()  # malformed files and missing sections raise from here
            return self._load_one_by_one(raw_items)
        kept, skipped = [], []
        for item in items:
            if "label" not in item:
                reason = "no 'label' in the datalist item"
                skipped.append(SkippedCase(case_name(item["image"]), item["dataset"], reason))
            else:
                kept.append(_for_evaluation(item, self.registry))
        return kept, skipped

    def _raw_items(self) -> list[Any]:
        """The section's raw items; a file that is no datalist at all raises ``DatalistError``."""
        assert self.datalist is not None
        try:
            with open(self.datalist, encoding="utf-8") as handle:
                content = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DatalistError(f"datalist {self.datalist}: cannot be read as JSON ({err})") from err
        if not isinstance(content, dict) or not isinstance(content.get(self.section), list):
            sections = sorted(content) if isinstance(content, dict) else []
            raise DatalistError(f"datalist {self.datalist}: no list '{self.section}' of items (sections: {sections}); "
                                "choose one with --eval_section")
        return content[self.section]

    def _load_one_by_one(self, raw_items: list[Any]) -> tuple[list[dict[str, Any]], list[SkippedCase]]:
        """Check each item alone (as a one-item datalist) so that every good case is kept."""
        base_dir = self.datalist.resolve().parent
        kept: list[dict[str, Any]] = []
        skipped: list[SkippedCase] = []
        with tempfile.TemporaryDirectory(prefix="hermes_eval_") as tmp:
            single = Path(tmp) / "item.json"
            for index, raw in enumerate(raw_items):
                raw = dict(raw) if isinstance(raw, dict) else raw
                image = raw.get("image", f"item {index}") if isinstance(raw, dict) else f"item {index}"
                dataset = str(raw.get("dataset", "")) if isinstance(raw, dict) else ""
                if isinstance(raw, dict):
                    for key in ("image", "label"):
                        if isinstance(raw.get(key), str) and not os.path.isabs(os.path.expanduser(raw[key])):
                            raw[key] = str(base_dir / raw[key])
                single.write_text(json.dumps({self.section: [raw]}))
                try:
                    (item,) = load_datalist(single, self.registry, section=self.section)
                except DatalistError as err:
                    problems = [_ONE_ITEM_PREFIX.sub("", line.strip()[2:]) for line in str(err).splitlines()[1:]]
                    reason = "; ".join(problems) or str(err)
                    skipped.append(SkippedCase(case_name(str(image)), dataset, f"item {index}: {reason}"))
                    continue
                if "label" not in item:
                    skipped.append(SkippedCase(case_name(str(image)), dataset, "no 'label' in the datalist item"))
                    continue
                kept.append(_for_evaluation(item, self.registry))
        return kept, skipped
