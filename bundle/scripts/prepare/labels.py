"""Label values: integer classes of the dataset as the task registry defines them, nothing else.

A label file may hold the dataset's task label values, 0, and the values the registry lists as the dataset's
``background_labels`` (AMOS MRI's CT-only 14 and 15), which become 0. Any other value, or a non-integer one, refuses
the case: a label is never guessed.
"""

from __future__ import annotations

import numpy as np

from ..registry import TaskRegistry
from .cases import CaseProblem


def mapped_label(array: np.ndarray, registry: TaskRegistry, dataset: str) -> np.ndarray:
    """``array`` as uint8 class values of ``dataset`` (background labels set to 0); a ``CaseProblem`` otherwise."""
    values = np.unique(array)
    if np.issubdtype(values.dtype, np.floating):
        fractional = values[np.abs(values - np.round(values)) > 1e-3]
        if fractional.size:
            raise CaseProblem(
                f"label has non-integer values {fractional[:5].tolist()} (a label map must hold class numbers)"
            )
        values = np.round(values)
    classes = registry.label_values(dataset)
    background = registry.background_labels(dataset)
    unknown = sorted(int(v) for v in values if int(v) not in {0, *classes, *background})
    if unknown:
        raise CaseProblem(
            f"label values {unknown} are not classes of dataset '{dataset}' (its classes are {classes}"
            + (f", and {background} read as background" if background else "")
            + ")"
        )
    label = np.round(array).astype(np.uint8) if np.issubdtype(array.dtype, np.floating) else array.astype(np.uint8)
    for value in background:
        label[label == value] = 0
    return label


def label_of(registry: TaskRegistry, dataset: str, name: str) -> int:
    """The registry's label value of the task called ``name`` in ``dataset`` (what a reader maps a class to)."""
    for task in registry.tasks_of(dataset):
        if task.name == name:
            return task.label
    raise KeyError(f"dataset '{dataset}' has no task '{name}' in the task registry")
