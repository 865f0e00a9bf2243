"""The one datalist reader: items ready for the transforms, and every problem as a structured record.

A datalist is MONAI's decathlon-style JSON, ``{"training": [...], "validation": [...], "testing": [...]}``, each item
``{"image", "label", "dataset", optional "modality"}`` with paths relative to the datalist's folder. A datalist may
name its own extra task registry (``"task_registry": "my_tasks.json"``, relative to its folder), so the tasks of its
datasets come with it and never leak into another run.

Training stops on any problem of any section (all listed at once); evaluation leaves bad items out and reports them;
inference reads its ``--input`` datalists with the same rules, datasets and labels optional. Items gain the fields of
``TaskRegistry.item_fields`` (task ids, label values, modality index, augmentation probability).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HermesError
from ..io.files import read_json_object
from ..registry import TaskRegistry, as_path_list
from .label_check import DEFAULT_LABEL_CACHE, LabelValueCache, label_problems

logger = logging.getLogger(__name__)

#: Top-level key naming the datalist's own extra task registry file(s).
REGISTRY_KEY = "task_registry"


class DatalistError(HermesError, ValueError):
    """A datalist cannot be used; the message names the file and lists every problem."""


@dataclass(frozen=True)
class ItemProblem:
    """Why one item (or, with ``index`` -1, a whole section) cannot be used."""

    section: str
    index: int
    image: str
    message: str
    dataset: str = ""

    def __str__(self) -> str:
        if self.index < 0:
            return f"section '{self.section}': {self.message}"
        return f"{self.section} item {self.index} (image {self.image}): {self.message}"


@dataclass
class Datalist:
    """The usable items of the sections read, the problems found, and what was dropped as a repeat."""

    path: Path
    sections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    problems: list[ItemProblem] = field(default_factory=list)
    repeats: list[ItemProblem] = field(default_factory=list)

    def section(self, name: str) -> list[dict[str, Any]]:
        return list(self.sections.get(name, []))

    def summary(self) -> str:
        """The first line names the file and the first problem: it is what a one-line error report shows."""
        listed = "\n  - ".join(str(problem) for problem in self.problems)
        first = f" {self.problems[0]}" if self.problems else ""
        return f"datalist {self.path}: {len(self.problems)} problem(s):{first}\n  - {listed}"

    def checked(self) -> Datalist:
        """This datalist if it has no problem, else one ``DatalistError`` listing every problem of every section."""
        if self.problems:
            raise DatalistError(self.summary())
        return self


def own_registries(path: str | os.PathLike | None) -> list[str]:
    """The extra task registry files a datalist names (``"task_registry"``), resolved against its folder."""
    if path in (None, ""):
        return []
    path = Path(str(path)).expanduser()
    content = read_json_object(path, "datalist", DatalistError)
    named = as_path_list(content.get(REGISTRY_KEY))
    resolved = [_resolve(name, path.resolve().parent) for name in named]
    missing = [name for name in resolved if not os.path.isfile(name)]
    if missing:
        raise DatalistError(f"datalist {path}: its '{REGISTRY_KEY}' {missing[0]} does not exist")
    return resolved


def checked_datalist(
    path: str | os.PathLike, registry: TaskRegistry, sections: Sequence[str] = ("training", "validation")
) -> Datalist:
    """``read_datalist(...).checked()``: training's datalist, every problem of every section reported at once."""
    return read_datalist(path, registry, sections).checked()


def read_datalist(
    path: str | os.PathLike,
    registry: TaskRegistry,
    sections: Sequence[str] = ("training", "validation"),
    require_label: bool = True,
    require_dataset: bool = True,
    check_files: bool = True,
    check_labels: bool = True,
    label_cache: str | os.PathLike | None = DEFAULT_LABEL_CACHE,
) -> Datalist:
    """Read and check ``sections`` of a datalist in one pass.

    Args:
        path: the datalist JSON file.
        registry: names the datasets and gives each item its task fields.
        sections: sections to read; a missing or empty one is a problem.
        require_label: every item needs a ``label`` (training, validation, evaluation).
        require_dataset: every item needs a registry ``dataset`` (inference inputs may go without).
        check_files: a missing image or label file is a problem.
        check_labels: read each label file: values the dataset does not define, non-integer values and an image of
            another size are problems (remembered per file in ``label_cache``; None keeps them in memory only).

    Raises:
        DatalistError: the file itself cannot be read (no such file, not JSON, not an object).
    """
    path = Path(str(path)).expanduser()
    content = read_json_object(path, "datalist", DatalistError)
    base_dir = path.resolve().parent
    cache = LabelValueCache(label_cache) if check_labels and require_dataset else None
    result = Datalist(path)
    for section in sections:
        raw_items = content.get(section)
        if not isinstance(raw_items, list):
            reason = (
                f"missing (sections: {sorted(k for k, v in content.items() if isinstance(v, list))})"
                if section not in content
                else "must be a list of items"
            )
            result.problems.append(ItemProblem(section, -1, "", reason))
            continue
        if not raw_items:
            result.problems.append(ItemProblem(section, -1, "", "is empty; add items or name another section"))
            continue
        result.sections[section] = _read_section(
            section, raw_items, base_dir, registry, result, cache, require_label, require_dataset, check_files
        )
    if cache is not None:
        cache.save()
    return result


def _read_section(
    section: str,
    raw_items: list[Any],
    base_dir: Path,
    registry: TaskRegistry,
    result: Datalist,
    cache: LabelValueCache | None,
    require_label: bool,
    require_dataset: bool,
    check_files: bool,
) -> list[dict[str, Any]]:
    usable: list[dict[str, Any]] = []
    first_index: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(raw_items):
        image = str(raw.get("image", "<no image>")) if isinstance(raw, Mapping) else "<not an object>"
        dataset = str(raw.get("dataset", "")) if isinstance(raw, Mapping) else ""
        item, problems = _prepare_item(raw, base_dir, registry, require_label, require_dataset, check_files)
        if not problems and cache is not None and "label" in item:
            problems = label_problems(item, registry, cache)
        if problems:
            result.problems.extend(ItemProblem(section, index, image, problem, dataset) for problem in problems)
            continue
        key = (item["image"], item.get("label", ""))
        if key in first_index:
            result.repeats.append(
                ItemProblem(section, index, image, f"repeats item {first_index[key]}; used once", dataset)
            )
            continue
        first_index[key] = index
        usable.append(item)
    if result.repeats:
        logger.warning("datalist %s: %s", result.path, "; ".join(str(r) for r in result.repeats))
    return usable


def _resolve(value: Any, base_dir: Path) -> str:
    file_path = Path(os.path.expanduser(str(value)))
    return str(file_path if file_path.is_absolute() else (base_dir / file_path))


def _prepare_item(
    raw: Any, base_dir: Path, registry: TaskRegistry, require_label: bool, require_dataset: bool, check_files: bool
) -> tuple[dict[str, Any], list[str]]:
    """Resolve paths and add the registry fields; return the item and what is wrong with it."""
    if not isinstance(raw, Mapping):
        return {}, ["an item must be an object with 'image', 'label' and 'dataset'"]
    item = dict(raw)
    problems: list[str] = []
    if not isinstance(item.get("image"), str):
        problems.append("'image' must be a file path")
    if "label" in item and not isinstance(item["label"], str):
        problems.append("'label' must be a file path")
    elif "label" not in item and require_label:
        problems.append("'label' is missing (every item of this section needs its label file)")
    dataset = item.get("dataset")
    if dataset is None and not require_dataset:
        pass
    elif not isinstance(dataset, str):
        problems.append("'dataset' is missing (name the registry dataset the case belongs to)")
    elif dataset not in registry.datasets:
        problems.append(f"unknown dataset '{dataset}'; the task registry knows {sorted(registry.datasets)}")
    if problems:
        return item, problems

    for key in ("image", "label"):
        if key in item:
            item[key] = _resolve(item[key], base_dir)
            if check_files and not os.path.exists(item[key]):
                problems.append(f"{key} file {item[key]} does not exist")
    if dataset is not None:
        try:
            item.update(registry.item_fields(dataset, item.get("modality")))
        except KeyError as err:
            problems.append(str(err.args[0]))
    return item, problems
