"""Checking label files before any training starts: values a dataset defines, integer classes, the image's size.

Reading every label of a large datalist costs about a second per CT label, so the unique values of each file are
remembered by (modification time, size): in memory for the process and in a JSON cache across runs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io.files import write_json
from ..registry import TaskRegistry

logger = logging.getLogger(__name__)

#: Where label values are remembered between runs unless ``label_cache`` says otherwise.
DEFAULT_LABEL_CACHE = Path.home() / ".cache" / "hermes_universal_segmentation" / "label_values.json"
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: label file -> ((mtime_ns, size), sorted unique values); filled while this process runs.
_MEMORY: dict[str, tuple[tuple[int, int], list[float]]] = {}


class LabelValueCache:
    """Unique label values per file, remembered on disk (written atomically; unreadable caches are rebuilt)."""

    def __init__(self, path: str | os.PathLike | None = DEFAULT_LABEL_CACHE) -> None:
        self.path = Path(path) if path is not None else None
        self.content = self._read()
        self._before = dict(self.content)

    def _read(self) -> dict[str, Any]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return {}
        return content if isinstance(content, dict) else {}

    def values(self, label_path: str) -> list[float]:
        stat = os.stat(label_path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        key = os.path.abspath(label_path)
        remembered = _MEMORY.get(key)
        if remembered and remembered[0] == stamp:
            return remembered[1]
        on_disk = self.content.get(key)
        if on_disk and tuple(on_disk.get("stamp", ())) == stamp:
            values = [float(v) for v in on_disk["values"]]
        else:
            values = [float(v) for v in np.unique(read_array(label_path))]
            self.content[key] = {"stamp": list(stamp), "values": values}
        _MEMORY[key] = (stamp, values)
        return values

    def save(self) -> None:
        """Write the cache if it changed; entries of files that no longer exist are dropped."""
        if self.path is None or self.content == self._before:
            return
        kept = {key: value for key, value in self.content.items() if os.path.exists(key)}
        try:
            write_json(kept, self.path)
        except OSError as err:  # a cache that cannot be written only costs time on the next run
            logger.warning("could not write the label-value cache %s (%s)", self.path, err)


def read_array(file_path: str) -> np.ndarray:
    if file_path.endswith(_NIFTI_SUFFIXES):
        import nibabel

        return np.asarray(nibabel.load(file_path).dataobj)
    from monai.transforms import LoadImage

    from ..io.readers import InputImageReader

    return np.asarray(LoadImage(reader=InputImageReader(), image_only=True)(file_path))


def label_problems(item: dict[str, Any], registry: TaskRegistry, cache: LabelValueCache) -> list[str]:
    """What is wrong with the item's label file: unreadable, non-integer values, unknown classes, another size."""
    label_path = item["label"]
    try:
        values = cache.values(label_path)
    except Exception as err:  # any reader failure is this item's problem
        return [f"label file {label_path} cannot be read ({type(err).__name__}: {err})"]
    problems = []
    non_integer = [v for v in values if not float(v).is_integer()]
    if non_integer:
        problems.append(
            f"label file {label_path} has non-integer values {non_integer[:5]} (a label map must hold "
            "class numbers; was it resampled with linear interpolation?)"
        )
    dataset = item["dataset"]
    allowed = {0, *registry.label_values(dataset), *registry.background_labels(dataset)}
    unknown = sorted({int(v) for v in values if float(v).is_integer() and int(v) not in allowed})
    if unknown:
        problems.append(
            f"label file {label_path} has values {unknown} that are not classes of dataset '{dataset}' (its classes "
            f"are {sorted(allowed - {0})}; add tasks for them to a task registry or list them as 'background_labels')"
        )
    shape_problem = _nifti_shape_mismatch(item["image"], label_path)
    if shape_problem:
        problems.append(shape_problem)
    return problems


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
