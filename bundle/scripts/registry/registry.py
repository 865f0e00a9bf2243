"""``TaskRegistry``: the one owner of task and modality knowledge.

Hermes treats every class of every dataset as its own task, with its own prior token. The registry says which global
task id each (dataset, label value) pair uses, which modality each dataset is, how modality names map to prior rows,
DICOM tags and classes of the modality head, how task names are written, which fields a datalist item gets, and it
reads and writes the task list that travels beside exported weights. Every other module asks it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import SetupError
from ..io.files import write_json
from .files import RegistryContent, Task, merge_extra, read_base

#: Prior rows of the published checkpoint (71 tasks + one reserved row); ids of user tasks start here.
PUBLISHED_NUM_TASKS = 72
#: The null task: pads task lists, selects the null prior row, gets no loss.
NULL_TASK = -1
#: Fields every datalist item gains from the registry.
ITEM_FIELDS = (
    "task_index",
    "task_label_values",
    "modality_index",
    "intensity_aug_prob",
    "crop_margin",
    "crop_min_size",
    "keep_native_slice_spacing",
)
#: Suffix of the task list written beside exported weights (``model.pt`` -> ``model.tasks.json``).
COMPANION_SUFFIX = ".tasks.json"
#: The task list of a training run, in its run folder: the companion of every checkpoint there.
RUN_TASK_LIST = "run" + COMPANION_SUFFIX


def normalize_task_name(name: str) -> str:
    """Lower case, ``_`` and ``-`` read as spaces: ``Right_Kidney`` -> ``right kidney``."""
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def slug(name: str) -> str:
    """A file-name-safe form: ``right kidney`` -> ``right-kidney``; ``amos_ct/liver`` -> ``amos_ct-liver``."""
    return re.sub(r"[^a-z0-9_]+", "-", str(name).lower()).strip("-")


class TaskRegistry:
    """Datasets, modalities and tasks merged from the base registry file and optional extras.

    Attributes:
        modalities: modality name -> prior row (-1 selects the last row: MRI of unknown sequence).
        datasets: dataset name -> its validated entry (``modality``: a name, or sequence key -> name;
            ``sample_weight``; ``intensity_aug_prob``; optional ``background_labels``, ``source``, and the
            training geometry of the published preparation: ``crop_margin``, ``crop_min_size``,
            ``keep_native_slice_spacing``).
        tasks: every task, in file order.
        sources: dataset name -> the registry file that defined it.
        reserved_ids: task ids no dataset may use.
    """

    def __init__(self, content: RegistryContent, base_file: str) -> None:
        self.modalities: dict[str, int] = dict(content.modalities)
        self.mr_family: tuple[str, ...] = tuple(content.modality_facts["mr_family"])
        self.dicom_modalities: dict[str, str] = dict(content.modality_facts["dicom_modalities"])
        self.reserved_ids: frozenset[int] = frozenset(content.reserved)
        self.datasets: dict[str, dict[str, Any]] = {name: dict(entry) for name, entry in content.datasets.items()}
        self.tasks: list[Task] = list(content.tasks)
        self.sources: dict[str, str] = dict(content.sources)
        self.modality_sources: dict[str, str] = dict(content.modality_sources)
        self.base_file = base_file
        self._by_dataset: dict[str, list[Task]] = {name: [] for name in self.datasets}
        for task in self.tasks:
            self._by_dataset[task.dataset].append(task)
        for task_list in self._by_dataset.values():
            task_list.sort(key=lambda t: t.label)

    @classmethod
    def load(
        cls, path: str | os.PathLike, extra_paths: Iterable[str | os.PathLike] | str | os.PathLike | None = ()
    ) -> TaskRegistry:
        """The base registry ``path`` with every file of ``extra_paths`` merged on top, in order (duplicates once)."""
        base_file = str(path)
        content = read_base(base_file, first_new_id=PUBLISHED_NUM_TASKS)
        for extra in dict.fromkeys(os.path.abspath(os.path.expanduser(p)) for p in as_path_list(extra_paths)):
            merge_extra(extra, content, base_file)
        return cls(content, base_file)

    # ---------------------------------------------------------------------------------------------- tasks
    @property
    def num_tasks(self) -> int:
        """Task prior rows the network needs (null row excluded): at least the published 72."""
        return max([PUBLISHED_NUM_TASKS] + [task.id + 1 for task in self.tasks])

    def tasks_of(self, dataset: str) -> list[Task]:
        """The dataset's tasks sorted by label value (the channel order of its labels and of ``task_index``)."""
        self._require_dataset(dataset)
        return list(self._by_dataset[dataset])

    def task_ids(self, dataset: str) -> list[int]:
        return [task.id for task in self.tasks_of(dataset)]

    def label_values(self, dataset: str) -> list[int]:
        return [task.label for task in self.tasks_of(dataset)]

    def background_labels(self, dataset: str) -> list[int]:
        """Label values that may occur in the dataset's files but belong to no task (read as background)."""
        self._require_dataset(dataset)
        return list(self.datasets[dataset].get("background_labels", []))

    def task_by_id(self, task_id: int) -> Task:
        """The first task with this id (datasets sharing an id share its name, e.g. amos_ct/amos_mr)."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(f"no task has id {task_id}; registered ids are {sorted({t.id for t in self.tasks})}")

    def item_fields(self, dataset: str, sequence: str | None = None) -> dict[str, Any]:
        """What a datalist item of ``dataset`` needs besides its files (keys ``ITEM_FIELDS``)."""
        return {
            "task_index": self.task_ids(dataset),
            "task_label_values": self.label_values(dataset),
            "modality_index": self.modality_index(self.dataset_modality(dataset, sequence)),
            "intensity_aug_prob": float(self.datasets[dataset]["intensity_aug_prob"]),
            "crop_margin": _three(self.datasets[dataset].get("crop_margin")),
            "crop_min_size": _three(self.datasets[dataset].get("crop_min_size")),
            "keep_native_slice_spacing": bool(self.datasets[dataset].get("keep_native_slice_spacing", False)),
        }

    # ----------------------------------------------------------------------------------------- modalities
    @property
    def num_modalities(self) -> int:
        """Modality prior rows of the network: one per modality index, the last one for index -1."""
        indices = set(self.modalities.values())
        return max(i for i in indices | {-1}) + 1 + (1 if -1 in indices else 0)

    def modality_index(self, name: str) -> int:
        if name not in self.modalities:
            raise KeyError(f"unknown modality '{name}'; known modalities are {', '.join(self.modalities)}")
        return self.modalities[name]

    def modality_name(self, index: int) -> str:
        """The modality of a prior row index (-1 and the last row are the same row)."""
        wrapped = int(index) % self.num_modalities
        for name, value in self.modalities.items():
            if value % self.num_modalities == wrapped:
                return name
        raise KeyError(f"no modality has index {index}")

    def modality_of_head_class(self, head_class: int) -> str:
        """The modality head's class ``k`` is prior row ``k``; its last class is the unknown-MRI row."""
        return self.modality_name(head_class)

    def modality_from_dicom(self, tag: str) -> str | None:
        """The modality a DICOM Modality tag means (``CT`` -> ``ct``), None for a tag the model does not know."""
        return self.dicom_modalities.get(str(tag).strip().upper())

    def parse_modality_choice(self, value: Any, option: str = "--modality") -> str:
        """A user's modality choice: ``auto`` or a modality name; anything else is a ``SetupError``."""
        name = str(value).strip().lower() if value not in (None, "") else "auto"
        if name != "auto" and name not in self.modalities:
            raise SetupError(f"{option}: unknown modality '{value}'; choose one of auto, {', '.join(self.modalities)}")
        return name

    def dataset_modalities(self, dataset: str) -> list[str]:
        """Modality names the dataset's images can have."""
        self._require_dataset(dataset)
        declared = self.datasets[dataset]["modality"]
        return sorted(set(declared.values())) if isinstance(declared, Mapping) else [declared]

    def dataset_modality(self, dataset: str, sequence: str | None = None) -> str:
        """The modality of one image of ``dataset``; ``sequence`` picks the sequence of multi-sequence datasets.

        ``sequence`` may be one of the dataset's sequence keys (``t1_in`` of chaos) or a modality name the dataset
        allows; a dataset of unknown MR sequence (``mr``) accepts any name of the MR family.
        """
        self._require_dataset(dataset)
        declared = self.datasets[dataset]["modality"]
        if isinstance(declared, Mapping):
            if sequence is None:
                raise KeyError(
                    f"dataset '{dataset}' has several sequences {sorted(declared)}; give the item's " "'modality'"
                )
            if sequence in declared:
                return declared[sequence]
            if sequence in declared.values():
                return sequence
            raise KeyError(f"'{sequence}' is not a sequence of dataset '{dataset}' (sequences: {sorted(declared)})")
        if sequence is None or sequence == declared:
            return declared
        if declared in self.mr_family and sequence in self.mr_family and self.modalities.get(declared) == -1:
            return sequence
        raise KeyError(f"dataset '{dataset}' is '{declared}'; its items cannot be '{sequence}'")

    def item_modality(self, value: str, dataset: str | None = None) -> str:
        """An input item's ``modality``: a modality name, or a sequence key of its ``dataset``."""
        key = str(value).strip().lower()
        if key in self.modalities:
            return key
        if dataset in self.datasets:
            declared = self.datasets[dataset]["modality"]
            if isinstance(declared, Mapping) and key in declared:
                return declared[key]
        raise KeyError(
            f"modality '{value}' is neither a modality ({', '.join(self.modalities)}) nor a sequence of "
            f"dataset '{dataset}'"
        )

    def datasets_for_modality(self, modality: str) -> list[str]:
        """Datasets whose tasks apply to an image of ``modality``; for unknown-sequence MRI every MR dataset."""
        wanted = set(self.mr_family) if self.modalities.get(modality) == -1 else {modality}
        return [name for name in self.datasets if set(self.dataset_modalities(name)) & wanted]

    # -------------------------------------------------------------------- the weights' companion task list
    def extra_content(self) -> dict[str, Any]:
        """The datasets and tasks beyond the base file, in registry-file form."""
        extra = [name for name, source in self.sources.items() if source != self.base_file]
        content: dict[str, Any] = {
            "description": "Datasets and tasks these weights were trained with beyond the published ones.",
            "datasets": {name: self.datasets[name] for name in extra},
            "tasks": [task._asdict() for task in self.tasks if task.dataset in extra],
        }
        if self.modality_sources:  # modalities added after the published ones (their rows grew the tables)
            content["modalities"] = dict(self.modalities)
            content["mr_family"] = list(self.mr_family)
            content["dicom_modalities"] = dict(self.dicom_modalities)
        return content

    def write_companion(self, weights_path: str | os.PathLike) -> Path | None:
        """Write ``<weights stem>.tasks.json`` (or remove a stale one when there are no extra tasks)."""
        return self.write_task_list(companion_path(weights_path))

    def write_task_list(self, target: str | os.PathLike) -> Path | None:
        """Write the extra datasets and tasks to ``target`` (removed when there are none: nothing stale remains)."""
        target = Path(target)
        content = self.extra_content()
        if not content["datasets"] and "modalities" not in content:
            target.unlink(missing_ok=True)
            return None
        return write_json(content, target)

    # ------------------------------------------------------------------------------------------- helpers
    def _require_dataset(self, dataset: str) -> None:
        if dataset not in self.datasets:
            raise KeyError(f"unknown dataset '{dataset}'; the task registry knows {sorted(self.datasets)}")

    def __repr__(self) -> str:
        return f"TaskRegistry({len(self.datasets)} datasets, {len(self.tasks)} tasks, num_tasks={self.num_tasks})"


def _three(voxels: Any) -> list[int] | None:
    """A registry voxel count (one int or [z, y, x]) as [z, y, x]; None stays None."""
    if voxels is None:
        return None
    values = list(voxels) if isinstance(voxels, list) else [voxels]
    return [int(v) for v in values * 3][:3] if len(values) == 1 else [int(v) for v in values]


def companion_path(weights_path: str | os.PathLike) -> Path:
    path = Path(str(weights_path)).expanduser()
    return path.with_name(path.stem + COMPANION_SUFFIX)


def companions_of(weights_path: str | os.PathLike) -> list[str]:
    """The task list that travels with ``weights_path`` (as a list of extra registry files): the one exported beside
    it (``model.tasks.json``), else, for a run checkpoint (``runs/NAME/best.pt``), its run's task list."""
    for companion in (companion_path(weights_path), Path(str(weights_path)).expanduser().parent / RUN_TASK_LIST):
        if companion.is_file():
            return [str(companion)]
    return []


def as_path_list(value: Any) -> list[str]:
    """None, '', one path, or a list of paths (what ``--task_registry_extra`` may be given as) -> list of paths."""
    if value is None or value == "" or value is False:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value if v]
