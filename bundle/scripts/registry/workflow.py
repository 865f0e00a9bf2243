"""The task registry of one workflow run: the one function training, inference and evaluation all call.

A run's registry is the base file plus, in order, ``--task_registry_extra``, the task list that travels with the weights
it starts from (``model.tasks.json`` beside them, ``run.tasks.json`` for a run checkpoint) and the registries its
datalist names. Kept out of ``scripts.registry``'s package import because it reads datalists
(``scripts.data.datalist`` imports the registry).
"""

from __future__ import annotations

import os
from typing import Any

from ..data.datalist import own_registries
from .registry import TaskRegistry, as_path_list, companions_of


def workflow_registry(
    base_file: str | os.PathLike,
    extra: Any = None,
    weights: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
) -> TaskRegistry:
    """Base registry + ``extra`` files + the weights' task list + the datalist's own registries (None: none)."""
    sources = as_path_list(extra)
    if weights not in (None, ""):
        sources += companions_of(weights)
    return TaskRegistry.load(base_file, sources + own_registries(datalist))
