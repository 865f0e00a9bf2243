"""Load and check a multi-dataset datalist before any training starts.

The datalist is MONAI's decathlon-style JSON: ``{"training": [...], "validation": [...], "testing": [...]}``, each item
``{"image", "label", "dataset", optional "modality"}`` with paths relative to the datalist's folder. Problems that would
otherwise surface hours later as a deep traceback inside a data-loader worker (unknown dataset, missing file, a label
value the dataset does not define, image and label of different size) are found up front and reported together in one
``DatalistError`` that names each bad item by index and image path.

Each returned item gains what the transforms and the network need: ``task_index`` (the dataset's global task ids in
label-value order), ``task_label_values`` (the label value of each of those tasks, so labels can be split into one
binary channel per task), ``modality_index`` and ``intensity_aug_prob``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .io_utils import read_json_object
from .task_registry import TaskRegistry

logger = logging.getLogger(__name__)

#: Where label values are remembered between runs unless ``label_cache`` says otherwise.
DEFAULT_LABEL_CACHE = Path.home() / ".cache" / "hermes_universal_segmentation" / "label_values.json"
#: Keys the loader adds to every item.
ADDED_KEYS = ("task_index", "task_label_values", "modality_index", "intensity_aug_prob")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: label file -> ((mtime_ns, size), sorted unique values); filled while this process runs.
_LABEL_VALUES_MEMORY: dict[str, tuple[tuple[int, int], list[float]]] = {}


class DatalistError(ValueError):
    """A datalist file is malformed, or some of its items are unusable (every bad item is listed)."""


def load_datalist(
    path: str | os.PathLike,
    registry: TaskRegistry | str | os.PathLike,
    section: str = "training",
    check_files: bool = True,
    check_labels: bool = True,
    label_cache: str | os.PathLike | None = DEFAULT_LABEL_CACHE,
) -> list[dict[str, Any]]:
    """Read one section of a datalist, check every item and return the items ready for the transforms.

    Args:
        path: the datalist JSON file.
        registry: a ``TaskRegistry`` or the path of a registry file.
        section: "training", "validation", "testing" or any other list in the file.
        check_files: fail on items whose image or label file does not exist.
        check_labels: read every label file and fail on values that are not classes of the item's dataset (nor its
            ``background_labels``), on non-integer values, and on NIfTI image/label pairs of different size. The first
            run reads every label file (about a second per CT label); the values are remembered per file (by
            modification time and size) for this process and in ``label_cache`` across runs.
        label_cache: JSON file remembering label values between runs (written atomically; entries of files that no
            longer exist are dropped); None keeps them in memory only.

    Raises:
        DatalistError: naming the file and section, and every bad item by index and image path.
    """
    path = Path(path)
    if not isinstance(registry, TaskRegistry):
        registry = TaskRegistry.load(registry)
    items = _read_section(path, section)
    base_dir = path.resolve().parent
    disk_cache = _read_disk_cache(label_cache)
    cache_before = dict(disk_cache)

    problems: list[str] = []
    loaded: list[dict[str, Any]] = []
    for index, raw in enumerate(items):
        item, item_problems = _prepare_item(raw, base_dir, registry, check_files)
        if not item_problems and check_labels and "label" in item:
            item_problems = _check_label_file(item, registry, disk_cache)
            if (index + 1) % 100 == 0:
                logger.info("checked the labels of %d/%d items of %s", index + 1, len(items), path)
        image_name = raw.get("image", "<no image>") if isinstance(raw, Mapping) else "<not an object>"
        problems.extend(f"item {index} (image {image_name}): {problem}" for problem in item_problems)
        loaded.append(item)

    if label_cache is not None and disk_cache != cache_before:
        try:
            _write_disk_cache(label_cache, disk_cache)
        except OSError as err:  # a cache that cannot be written only costs time on the next run
            logger.warning("could not write the label-value cache %s (%s)", label_cache, err)
    if problems:
        listed = "\n  - ".join(problems)
        raise DatalistError(f"datalist {path}, section '{section}': {len(problems)} problem(s):\n  - {listed}")
    return loaded


def _read_section(path: Path, section: str) -> list[Any]:
    content = read_json_object(path, "datalist", DatalistError)
    if section not in content:
        raise DatalistError(f"datalist {path}: no section '{section}' (sections: {sorted(content)})")
    items = content[section]
    if not isinstance(items, list):
        raise DatalistError(f"datalist {path}: section '{section}' must be a list of items")
    return items


def _resolve(value: Any, base_dir: Path) -> str:
    file_path = Path(os.path.expanduser(str(value)))
    return str(file_path if file_path.is_absolute() else (base_dir / file_path))


def _prepare_item(
    raw: Any, base_dir: Path, registry: TaskRegistry, check_files: bool
) -> tuple[dict[str, Any], list[str]]:
    """Resolve paths and add the task/modality fields; return the item and what is wrong with it."""
    if not isinstance(raw, Mapping):
        return {}, ["an item must be an object with 'image', 'label' and 'dataset'"]
    item = dict(raw)
    problems: list[str] = []
    if not isinstance(item.get("image"), str):
        problems.append("'image' must be a file path")
    if "label" in item and not isinstance(item["label"], str):
        problems.append("'label' must be a file path")
    dataset = item.get("dataset")
    if not isinstance(dataset, str):
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
    try:
        item["modality_index"] = registry.modality_index(dataset, item.get("modality"))
    except KeyError as err:
        problems.append(str(err.args[0]))
    item["task_index"] = registry.task_ids(dataset)
    item["task_label_values"] = registry.label_values(dataset)
    item["intensity_aug_prob"] = float(registry.datasets[dataset]["intensity_aug_prob"])
    return item, problems


def _check_label_file(item: dict[str, Any], registry: TaskRegistry, disk_cache: dict[str, Any]) -> list[str]:
    label_path = item["label"]
    try:
        values = _label_values_of(label_path, disk_cache)
    except Exception as err:  # any reader failure is reported as this item's problem
        return [f"label file {label_path} cannot be read ({type(err).__name__}: {err})"]
    problems = []
    non_integer = [v for v in values if not float(v).is_integer()]
    if non_integer:
        problems.append(
            f"label file {label_path} has non-integer values {non_integer[:5]} (a label map must hold class numbers; "
            "was it resampled with linear interpolation?)"
        )
    dataset = item["dataset"]
    allowed = {0, *registry.label_values(dataset), *registry.background_labels(dataset)}
    unknown = sorted({int(v) for v in values if float(v).is_integer() and int(v) not in allowed})
    if unknown:
        problems.append(
            f"label file {label_path} has values {unknown} that are not classes of dataset '{dataset}' "
            f"(its classes are {sorted(allowed - {0})}; add tasks for them to a task registry or list them as "
            "'background_labels')"
        )
    shape_problem = _nifti_shape_mismatch(item["image"], label_path)
    if shape_problem:
        problems.append(shape_problem)
    return problems


def _label_values_of(label_path: str, disk_cache: dict[str, Any]) -> list[float]:
    """Sorted unique values of a label file, remembered by (modification time, size)."""
    stat = os.stat(label_path)
    stamp = (stat.st_mtime_ns, stat.st_size)
    key = os.path.abspath(label_path)
    remembered = _LABEL_VALUES_MEMORY.get(key)
    if remembered and remembered[0] == stamp:
        return remembered[1]
    on_disk = disk_cache.get(key)
    if on_disk and tuple(on_disk.get("stamp", ())) == stamp:
        values = [float(v) for v in on_disk["values"]]
    else:
        values = [float(v) for v in np.unique(_read_array(label_path))]
        disk_cache[key] = {"stamp": list(stamp), "values": values}
    _LABEL_VALUES_MEMORY[key] = (stamp, values)
    return values


def _read_array(file_path: str) -> np.ndarray:
    if file_path.endswith(_NIFTI_SUFFIXES):
        import nibabel

        return np.asarray(nibabel.load(file_path).dataobj)
    from monai.transforms import LoadImage

    return np.asarray(LoadImage(image_only=True)(file_path))


def _nifti_shape_mismatch(image_path: str, label_path: str) -> str | None:
    """Compare the spatial sizes of a NIfTI image/label pair from their headers (other formats are not checked)."""
    if not (image_path.endswith(_NIFTI_SUFFIXES) and label_path.endswith(_NIFTI_SUFFIXES)):
        return None
    import nibabel

    try:
        image_shape = nibabel.load(image_path).shape[:3]
        label_shape = nibabel.load(label_path).shape[:3]
    except Exception as err:  # a broken header is this item's problem
        return f"image or label header cannot be read ({type(err).__name__}: {err})"
    if image_shape != label_shape:
        return f"image size {image_shape} differs from label size {label_shape} ({label_path})"
    return None


def _read_disk_cache(label_cache: str | os.PathLike | None) -> dict[str, Any]:
    if label_cache is None or not Path(label_cache).is_file():
        return {}
    try:
        with open(label_cache, encoding="utf-8") as handle:
            content = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}  # an unreadable cache is rebuilt, never trusted
    return content if isinstance(content, dict) else {}


def _write_disk_cache(label_cache: str | os.PathLike, content: dict[str, Any]) -> None:
    content = {key: value for key, value in content.items() if os.path.exists(key)}
    target = Path(label_cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(content, handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
