"""Task and modality knowledge: the one place that says which prior token segments what."""

from .files import Task, TaskRegistryError
from .registry import (
    ITEM_FIELDS,
    NULL_TASK,
    PUBLISHED_NUM_TASKS,
    RUN_TASK_LIST,
    TaskRegistry,
    as_path_list,
    companion_path,
    companions_of,
    normalize_task_name,
    slug,
)

__all__ = [
    "ITEM_FIELDS",
    "NULL_TASK",
    "PUBLISHED_NUM_TASKS",
    "RUN_TASK_LIST",
    "Task",
    "TaskRegistry",
    "TaskRegistryError",
    "as_path_list",
    "companion_path",
    "companions_of",
    "normalize_task_name",
    "slug",
]
