"""Reading, checking and merging task registry files.

The base file (``configs/task_registry.json``) declares the modality table and the published datasets and tasks.
Extra files (a user's datasets, the sample suite, the weights' companion) may only add datasets and tasks with new
ids; every inconsistency is one ``TaskRegistryError`` naming the file at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import HermesError
from ..io.files import read_json_object

#: Dataset fields every registry entry must have.
REQUIRED_DATASET_FIELDS = ("modality", "sample_weight", "intensity_aug_prob")


class TaskRegistryError(HermesError, ValueError):
    """A registry file is malformed or contradicts the registries loaded before it."""


class Task(NamedTuple):
    """One (dataset, label value) pair and the global task id whose prior token segments it."""

    id: int
    dataset: str
    name: str
    label: int


@dataclass
class RegistryContent:
    """Everything merged so far; the files are added one by one."""

    modalities: dict[str, int]
    modality_facts: dict[str, Any]
    reserved: set[int]
    first_new_id: int
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    modality_sources: dict[str, str] = field(default_factory=dict)  # modalities added by extra files -> file


def read_registry_file(path: str) -> dict[str, Any]:
    return read_json_object(path, "task registry", TaskRegistryError)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_modalities(raw: Mapping[str, Any], path: str) -> dict[str, int]:
    """The modality table: name -> prior row (−1 selects the last row, MRI of unknown sequence)."""
    modalities = raw.get("modalities")
    if not isinstance(modalities, dict) or not modalities:
        raise TaskRegistryError(f"task registry {path}: 'modalities' must be an object of name -> prior index")
    for name, index in modalities.items():
        if not _is_int(index) or index < -1:
            raise TaskRegistryError(f"task registry {path}: modality '{name}' has index {index!r}; use an int >= -1")
    indices = sorted(modalities.values())
    if len(set(indices)) != len(indices):
        raise TaskRegistryError(f"task registry {path}: two modalities share a prior index ({modalities})")
    return dict(modalities)


def parse_modality_facts(raw: Mapping[str, Any], modalities: Mapping[str, int], path: str) -> dict[str, Any]:
    """``mr_family`` (modalities an MRI of unknown sequence may be) and ``dicom_modalities`` (tag -> name)."""
    family = raw.get("mr_family", [])
    dicom = raw.get("dicom_modalities", {})
    if not isinstance(family, list) or not all(name in modalities for name in family):
        raise TaskRegistryError(f"task registry {path}: 'mr_family' must list modality names of {sorted(modalities)}")
    if not isinstance(dicom, dict) or not all(name in modalities for name in dicom.values()):
        raise TaskRegistryError(
            f"task registry {path}: 'dicom_modalities' must map DICOM Modality tags to modality "
            f"names of {sorted(modalities)}"
        )
    return {"mr_family": list(family), "dicom_modalities": {str(k).upper(): v for k, v in dicom.items()}}


def parse_reserved(raw: Mapping[str, Any], path: str) -> set[int]:
    reserved = raw.get("reserved_ids", [])
    if not isinstance(reserved, list) or not all(_is_int(i) for i in reserved):
        raise TaskRegistryError(f"task registry {path}: 'reserved_ids' must be a list of ints")
    return set(reserved)


def check_dataset(name: str, entry: Any, modalities: Mapping[str, int], path: str) -> None:
    where = f"task registry {path}: dataset '{name}'"
    if not isinstance(entry, dict):
        raise TaskRegistryError(f"{where} must be an object")
    missing = [key for key in REQUIRED_DATASET_FIELDS if key not in entry]
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
    check_crop_fields(entry, where)


def _voxels(value: Any, least: int) -> bool:
    """An int >= ``least``, or a list of three such ints (array axes of the SPL-oriented arrays)."""
    values = value if isinstance(value, list) else [value]
    return len(values) in (1, 3) and all(_is_int(v) and v >= least for v in values)


def check_crop_fields(entry: Mapping[str, Any], where: str) -> None:
    """The optional training-geometry fields: ``crop_margin``, ``crop_min_size``, ``keep_native_slice_spacing``."""
    margin = entry.get("crop_margin")
    if margin is not None and not _voxels(margin, 0):
        raise TaskRegistryError(
            f"{where}: 'crop_margin' must be null (no crop) or voxels >= 0, one int or " f"[z, y, x], got {margin!r}"
        )
    min_size = entry.get("crop_min_size")
    if min_size is not None and (margin is None or not _voxels(min_size, 1)):
        raise TaskRegistryError(
            f"{where}: 'crop_min_size' must be voxels >= 1 (one int or [z, y, x]) and needs a "
            f"'crop_margin', got {min_size!r} with crop_margin {margin!r}"
        )
    native = entry.get("keep_native_slice_spacing", False)
    if not isinstance(native, bool):
        raise TaskRegistryError(f"{where}: 'keep_native_slice_spacing' must be true or false, got {native!r}")


def _check_task(
    item: Any, position: int, path: str, new_datasets: Mapping[str, Any], merged: RegistryContent, min_new_id: int
) -> Task:
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
        if dataset in merged.datasets:
            defined_in = f" (it is defined in {merged.sources[dataset]}; add datasets and their tasks in one file)"
        raise TaskRegistryError(f"{where}: dataset '{dataset}' is not defined in this file{defined_in}")
    if task_id in merged.reserved:
        raise TaskRegistryError(f"{where}: id {task_id} is reserved (reserved ids: {sorted(merged.reserved)})")
    if task_id < min_new_id:
        raise TaskRegistryError(
            f"{where}: ids below {min_new_id} belong to the published model; new tasks need ids >= {min_new_id}"
        )
    if label in new_datasets[dataset].get("background_labels", []):
        raise TaskRegistryError(f"{where}: label {label} is listed in the dataset's 'background_labels'")
    return Task(task_id, dataset, name, label)


def _same_as_merged(name: str, entry: Any, tasks: list[Any], merged: RegistryContent) -> bool:
    """A dataset defined again exactly as before (the weights' task list and the datalist's registry, say)."""
    if name not in merged.datasets or entry != merged.datasets[name]:
        return False
    mine = {
        (t.get("id"), t.get("name"), t.get("label")) for t in tasks if isinstance(t, dict) and t.get("dataset") == name
    }
    return mine == {(t.id, t.name, t.label) for t in merged.tasks if t.dataset == name}


def merge_file(raw: Mapping[str, Any], path: str, merged: RegistryContent, min_new_id: int) -> None:
    """Validate one file's datasets and tasks against what is merged so far, then add them."""
    new_datasets = raw.get("datasets", {})
    new_tasks = raw.get("tasks", [])
    if not isinstance(new_datasets, dict):
        raise TaskRegistryError(f"task registry {path}: 'datasets' must be an object of name -> entry")
    if not isinstance(new_tasks, list):
        raise TaskRegistryError(f"task registry {path}: 'tasks' must be a list")
    repeated = {name for name in new_datasets if _same_as_merged(name, new_datasets[name], new_tasks, merged)}
    new_datasets = {name: entry for name, entry in new_datasets.items() if name not in repeated}
    new_tasks = [t for t in new_tasks if not (isinstance(t, dict) and t.get("dataset") in repeated)]
    for name, entry in new_datasets.items():
        if name in merged.datasets:
            raise TaskRegistryError(
                f"task registry {path}: dataset '{name}' is already defined differently in {merged.sources[name]}; "
                "give your dataset another name (dataset entries are never redefined)"
            )
        check_dataset(name, entry, merged.modalities, path)

    name_of_id = {task.id: task.name for task in merged.tasks}
    pairs = {(task.dataset, task.label) for task in merged.tasks}
    ids_per_dataset: dict[str, set[int]] = {}
    added: list[Task] = []
    for position, item in enumerate(new_tasks):
        task = _check_task(item, position, path, new_datasets, merged, min_new_id)
        where = f"task registry {path}: tasks[{position}] (dataset '{task.dataset}', label {task.label}, id {task.id})"
        if (task.dataset, task.label) in pairs:
            raise TaskRegistryError(f"{where}: label {task.label} of dataset '{task.dataset}' already has a task")
        if task.id in name_of_id and name_of_id[task.id] != task.name:
            raise TaskRegistryError(
                f"{where}: id {task.id} already means '{name_of_id[task.id]}', not '{task.name}'; give the new task "
                "an unused id (an id is shared only by the very same task in two datasets)"
            )
        if task.id in ids_per_dataset.setdefault(task.dataset, set()):
            raise TaskRegistryError(f"{where}: id {task.id} is used twice within dataset '{task.dataset}'")
        ids_per_dataset[task.dataset].add(task.id)
        pairs.add((task.dataset, task.label))
        name_of_id[task.id] = task.name
        added.append(task)

    without_tasks = sorted(set(new_datasets) - {task.dataset for task in added})
    if without_tasks:
        raise TaskRegistryError(f"task registry {path}: datasets {without_tasks} have no tasks")
    for name, entry in new_datasets.items():
        merged.datasets[name] = dict(entry)
        merged.sources[name] = path
    merged.tasks.extend(added)


def read_base(path: str, first_new_id: int) -> RegistryContent:
    """The base registry: modality table, reserved ids, published datasets and tasks."""
    raw = read_registry_file(path)
    modalities = parse_modalities(raw, path)
    merged = RegistryContent(
        modalities, parse_modality_facts(raw, modalities, path), parse_reserved(raw, path), first_new_id
    )
    merge_file(raw, path, merged, min_new_id=0)
    return merged


def merge_modalities(raw: Mapping[str, Any], path: str, merged: RegistryContent, base_path: str) -> None:
    """An extra file's ``modalities``: every name already known keeps its prior row; new names (a new imaging
    modality, e.g. ultrasound) take the next rows in order, so the network's modality tables grow by rows at the end
    (``scripts.networks.rows``: the unknown-MRI row that −1 selects stays last). New names may bring their DICOM tags
    (``dicom_modalities``) and join ``mr_family`` (a new MR sequence)."""
    table = parse_modalities(raw, path)
    changed = {
        name: index for name, index in table.items() if name in merged.modalities and merged.modalities[name] != index
    }
    if changed:
        raise TaskRegistryError(
            f"task registry {path}: 'modalities' gives {changed} other prior rows than {base_path} "
            f"({merged.modalities}); known modalities keep their rows, an extra registry can only add new ones"
        )
    added = {name: index for name, index in table.items() if name not in merged.modalities}
    first = max(merged.modalities.values()) + 1
    if sorted(added.values()) != list(range(first, first + len(added))):
        raise TaskRegistryError(
            f"task registry {path}: new modalities {added} must take the next prior rows {first}, {first + 1}, ... "
            "in order (the rows after the known modalities)"
        )
    facts = parse_modality_facts(raw, {**merged.modalities, **added}, path)
    for tag, name in facts["dicom_modalities"].items():
        if merged.modality_facts["dicom_modalities"].get(tag, name) != name:
            raise TaskRegistryError(f"task registry {path}: DICOM tag '{tag}' already means another modality")
    merged.modalities.update(sorted(added.items(), key=lambda item: item[1]))
    merged.modality_facts["dicom_modalities"].update(facts["dicom_modalities"])
    merged.modality_facts["mr_family"] += [n for n in facts["mr_family"] if n not in merged.modality_facts["mr_family"]]
    for name in added:
        merged.modality_sources[name] = path


def merge_extra(path: str, merged: RegistryContent, base_path: str) -> None:
    """Add an extra registry file: its modalities (new ones only), reserved ids, datasets and tasks."""
    raw = read_registry_file(path)
    if "modalities" in raw:
        merge_modalities(raw, path, merged, base_path)
    if "reserved_ids" in raw:
        merged.reserved |= parse_reserved(raw, path)
    merge_file(raw, path, merged, min_new_id=merged.first_new_id)
