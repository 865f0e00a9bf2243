"""The task registry: which global task id (one prior token of the network) each (dataset, label value) pair uses.

Hermes treats every class of every dataset as its own task. The ids of the published model (0-70) are fixed by its
checkpoint, so the registry file is append-only: extra registries (a user's datasets, the sample suite) are merged on
top and may only add datasets and tasks with new ids >= 72. Every inconsistency is reported as one
``TaskRegistryError`` that names the file at fault.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .io_utils import read_json_object

#: Prior rows of the published checkpoint (71 tasks + one reserved row); ids of user tasks start here.
PUBLISHED_NUM_TASKS = 72
#: Dataset fields every registry entry must have.
_REQUIRED_DATASET_FIELDS = ("modality", "sample_weight", "intensity_aug_prob")


class TaskRegistryError(ValueError):
    """A registry file is malformed or contradicts the registries loaded before it."""


class Task(NamedTuple):
    """One (dataset, label value) pair and the global task id whose prior token segments it."""

    id: int
    dataset: str
    name: str
    label: int


class TaskRegistry:
    """Datasets, modalities and tasks merged from a base registry file and optional extras.

    Attributes:
        modalities: modality name -> modality prior index (-1 selects the "unknown MR sequence" row).
        reserved_ids: task ids no dataset may use.
        datasets: dataset name -> its (validated) JSON entry: ``modality`` (a modality name, or a mapping from the
            dataset's sequence keys to modality names), ``sample_weight``, ``intensity_aug_prob`` and optional fields
            such as ``source`` and ``background_labels`` (label values found in the files that are no task).
        tasks: every task in file order.
        sources: dataset name -> the registry file that defined it (for error messages).
    """

    def __init__(
        self,
        modalities: Mapping[str, int],
        reserved_ids: Iterable[int],
        datasets: Mapping[str, Mapping[str, Any]],
        tasks: Iterable[Task],
        sources: Mapping[str, str],
    ) -> None:
        self.modalities: dict[str, int] = dict(modalities)
        self.reserved_ids: frozenset[int] = frozenset(reserved_ids)
        self.datasets: dict[str, dict[str, Any]] = {name: dict(entry) for name, entry in datasets.items()}
        self.tasks: list[Task] = list(tasks)
        self.sources: dict[str, str] = dict(sources)
        self._by_dataset: dict[str, list[Task]] = {name: [] for name in self.datasets}
        for task in self.tasks:
            self._by_dataset[task.dataset].append(task)
        for task_list in self._by_dataset.values():
            task_list.sort(key=lambda t: t.label)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls, path: str | os.PathLike, extra_paths: Iterable[str | os.PathLike] | str | os.PathLike = ()
    ) -> TaskRegistry:
        """Read the base registry ``path`` and merge every file of ``extra_paths`` on top, in order.

        Extras may add datasets and tasks (ids >= 72, never a reserved id, never an id another task uses with another
        name); they may not redefine a dataset or a modality. Raises ``TaskRegistryError`` naming the file at fault.
        """
        if isinstance(extra_paths, (str, os.PathLike)):
            extra_paths = [extra_paths]
        base_file = str(path)
        raw = _read_json(base_file)
        modalities = _parse_modalities(raw, base_file)
        reserved = _parse_reserved(raw, base_file)
        datasets: dict[str, dict[str, Any]] = {}
        sources: dict[str, str] = {}
        tasks: list[Task] = []
        _merge(raw, base_file, modalities, reserved, datasets, sources, tasks, min_new_id=0)
        for extra in extra_paths:
            extra_file = str(extra)
            extra_raw = _read_json(extra_file)
            if "modalities" in extra_raw and _parse_modalities(extra_raw, extra_file) != modalities:
                raise TaskRegistryError(
                    f"task registry {extra_file}: 'modalities' differs from {base_file}; the network has one modality "
                    f"prior per entry of {modalities}, so an extra registry cannot change them"
                )
            reserved |= _parse_reserved(extra_raw, extra_file) if "reserved_ids" in extra_raw else set()
            _merge(
                extra_raw, extra_file, modalities, reserved, datasets, sources, tasks, min_new_id=PUBLISHED_NUM_TASKS
            )
        return cls(modalities, reserved, datasets, tasks, sources)

    # ------------------------------------------------------------------ queries
    @property
    def num_tasks(self) -> int:
        """Task prior rows the network needs (null row excluded): at least the published 72."""
        return max([PUBLISHED_NUM_TASKS] + [task.id + 1 for task in self.tasks])

    def tasks_of(self, dataset: str) -> list[Task]:
        """The dataset's tasks sorted by label value (the channel order of its labels and of ``task_index``)."""
        self._require_dataset(dataset)
        return list(self._by_dataset[dataset])

    def task_ids(self, dataset: str) -> list[int]:
        """Global task ids of the dataset, ordered by label value."""
        return [task.id for task in self.tasks_of(dataset)]

    def label_values(self, dataset: str) -> list[int]:
        """Label values of the dataset's tasks, ordered like ``task_ids``."""
        return [task.label for task in self.tasks_of(dataset)]

    def background_labels(self, dataset: str) -> list[int]:
        """Label values that may occur in the dataset's label files but belong to no task (read as background)."""
        self._require_dataset(dataset)
        return list(self.datasets[dataset].get("background_labels", []))

    def task_by_id(self, task_id: int) -> Task:
        """The first registered task with this id (datasets sharing an id share its name, e.g. amos_ct/amos_mr)."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(f"no task has id {task_id}; registered ids are {sorted({t.id for t in self.tasks})}")

    def modality_index(self, dataset: str, sequence: str | None = None) -> int:
        """Modality prior index of a dataset's image (``sequence`` picks the sequence of multi-sequence datasets).

        ``sequence`` may be one of the dataset's sequence keys (e.g. ``"t1_in"`` for chaos) or a modality name the
        dataset is allowed to have. Datasets of unknown MR sequence (``"mr"``) accept any MR modality name.
        """
        self._require_dataset(dataset)
        declared = self.datasets[dataset]["modality"]
        if isinstance(declared, Mapping):
            if sequence is None:
                raise KeyError(
                    f"dataset '{dataset}' has several sequences {sorted(declared)}; give the item's 'modality'"
                )
            if sequence in declared:
                return self.modalities[declared[sequence]]
            if sequence in declared.values():
                return self.modalities[sequence]
            raise KeyError(
                f"'{sequence}' is not a sequence of dataset '{dataset}' (sequences: {sorted(declared)})"
            )
        if sequence is None or sequence == declared:
            return self.modalities[declared]
        if declared == "mr" and sequence in _MR_MODALITIES and sequence in self.modalities:
            return self.modalities[sequence]
        raise KeyError(f"dataset '{dataset}' is '{declared}'; its items cannot be '{sequence}'")

    def dataset_modalities(self, dataset: str) -> list[str]:
        """Modality names the dataset's images can have."""
        self._require_dataset(dataset)
        declared = self.datasets[dataset]["modality"]
        return sorted(set(declared.values())) if isinstance(declared, Mapping) else [declared]

    def _require_dataset(self, dataset: str) -> None:
        if dataset not in self.datasets:
            raise KeyError(f"unknown dataset '{dataset}'; the task registry knows {sorted(self.datasets)}")

    def __repr__(self) -> str:
        return f"TaskRegistry({len(self.datasets)} datasets, {len(self.tasks)} tasks, num_tasks={self.num_tasks})"


_MR_MODALITIES = ("t1", "t2", "cine", "mr")


def _read_json(path: str) -> dict[str, Any]:
    return read_json_object(path, "task registry", TaskRegistryError)


def _parse_modalities(raw: Mapping[str, Any], path: str) -> dict[str, int]:
    modalities = raw.get("modalities")
    if not isinstance(modalities, dict) or not modalities:
        raise TaskRegistryError(f"task registry {path}: 'modalities' must be an object of name -> prior index")
    for name, index in modalities.items():
        if not _is_int(index) or index < -1:
            raise TaskRegistryError(f"task registry {path}: modality '{name}' has index {index!r}; use an int >= -1")
    return dict(modalities)


def _parse_reserved(raw: Mapping[str, Any], path: str) -> set[int]:
    reserved = raw.get("reserved_ids", [])
    if not isinstance(reserved, list) or not all(_is_int(i) for i in reserved):
        raise TaskRegistryError(f"task registry {path}: 'reserved_ids' must be a list of ints")
    return set(reserved)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_dataset(name: str, entry: Any, modalities: Mapping[str, int], path: str) -> None:
    where = f"task registry {path}: dataset '{name}'"
    if not isinstance(entry, dict):
        raise TaskRegistryError(f"{where} must be an object")
    missing = [field for field in _REQUIRED_DATASET_FIELDS if field not in entry]
    if missing:
        raise TaskRegistryError(f"{where} lacks {missing}")
    modality = entry["modality"]
    names = list(modality.values()) if isinstance(modality, dict) else [modality]
    if not names or not all(isinstance(n, str) for n in names):
        raise TaskRegistryError(f"{where}: 'modality' must be a modality name or an object of sequence -> name")
    unknown = [n for n in names if n not in modalities]
    if unknown:
        raise TaskRegistryError(f"{where}: unknown modality {unknown}; known modalities are {sorted(modalities)}")
    weight = entry["sample_weight"]
    if not _is_number(weight) or weight <= 0:
        raise TaskRegistryError(f"{where}: 'sample_weight' must be a number > 0, got {weight!r}")
    prob = entry["intensity_aug_prob"]
    if not _is_number(prob) or not 0.0 <= prob <= 1.0:
        raise TaskRegistryError(f"{where}: 'intensity_aug_prob' must be a number in [0, 1], got {prob!r}")
    background = entry.get("background_labels", [])
    if not isinstance(background, list) or not all(_is_int(v) and v > 0 for v in background):
        raise TaskRegistryError(f"{where}: 'background_labels' must be a list of label values > 0")


def _merge(
    raw: Mapping[str, Any],
    path: str,
    modalities: Mapping[str, int],
    reserved: set[int],
    datasets: dict[str, dict[str, Any]],
    sources: dict[str, str],
    tasks: list[Task],
    min_new_id: int,
) -> None:
    """Validate one file's datasets and tasks against what is merged so far, then add them."""
    new_datasets = raw.get("datasets", {})
    new_tasks = raw.get("tasks", [])
    if not isinstance(new_datasets, dict):
        raise TaskRegistryError(f"task registry {path}: 'datasets' must be an object of name -> entry")
    if not isinstance(new_tasks, list):
        raise TaskRegistryError(f"task registry {path}: 'tasks' must be a list")
    for name, entry in new_datasets.items():
        if name in datasets:
            raise TaskRegistryError(
                f"task registry {path}: dataset '{name}' is already defined in {sources[name]}; give your dataset "
                "another name (dataset entries are never redefined)"
            )
        _check_dataset(name, entry, modalities, path)

    name_of_id = {task.id: task.name for task in tasks}
    pairs = {(task.dataset, task.label) for task in tasks}
    ids_per_dataset: dict[str, set[int]] = {}
    added: list[Task] = []
    for position, item in enumerate(new_tasks):
        where = f"task registry {path}: tasks[{position}]"
        if not isinstance(item, dict) or not {"id", "dataset", "name", "label"} <= set(item):
            raise TaskRegistryError(f"{where} must be an object with 'id', 'dataset', 'name' and 'label'")
        task_id, dataset, name, label = item["id"], item["dataset"], item["name"], item["label"]
        where = f"{where} (dataset '{dataset}', label {label!r}, id {task_id!r})"
        if not _is_int(task_id) or task_id < 0:
            raise TaskRegistryError(f"{where}: 'id' must be an int >= 0")
        if not _is_int(label) or label <= 0:
            raise TaskRegistryError(f"{where}: 'label' must be an int > 0 (0 is background)")
        if not isinstance(name, str) or not name.strip():
            raise TaskRegistryError(f"{where}: 'name' must be a non-empty string")
        if dataset not in new_datasets:
            defined_in = ""
            if dataset in datasets:
                defined_in = f" (it is defined in {sources[dataset]}; add datasets and their tasks in one file)"
            raise TaskRegistryError(f"{where}: dataset '{dataset}' is not defined in this file{defined_in}")
        if task_id in reserved:
            raise TaskRegistryError(f"{where}: id {task_id} is reserved (reserved ids: {sorted(reserved)})")
        if task_id < min_new_id:
            raise TaskRegistryError(
                f"{where}: ids below {min_new_id} belong to the published model; new tasks need ids >= {min_new_id}"
            )
        if (dataset, label) in pairs:
            raise TaskRegistryError(f"{where}: label {label} of dataset '{dataset}' already has a task")
        if task_id in name_of_id and name_of_id[task_id] != name:
            raise TaskRegistryError(
                f"{where}: id {task_id} already means '{name_of_id[task_id]}', not '{name}'; give the new task an "
                "unused id (an id is shared only by the very same task in two datasets)"
            )
        if task_id in ids_per_dataset.setdefault(dataset, set()):
            raise TaskRegistryError(f"{where}: id {task_id} is used twice within dataset '{dataset}'")
        background = new_datasets[dataset].get("background_labels", [])
        if label in background:
            raise TaskRegistryError(f"{where}: label {label} is listed in the dataset's 'background_labels'")
        ids_per_dataset[dataset].add(task_id)
        pairs.add((dataset, label))
        name_of_id[task_id] = name
        added.append(Task(task_id, dataset, name, label))

    without_tasks = sorted(set(new_datasets) - {task.dataset for task in added})
    if without_tasks:
        raise TaskRegistryError(f"task registry {path}: datasets {without_tasks} have no tasks")
    for name, entry in new_datasets.items():
        datasets[name] = dict(entry)
        sources[name] = path
    tasks.extend(added)
