"""Phantom datalists for learning after release: an "old" model's data and the "new" data it learns afterwards.

From the two phantom datasets of :func:`make_phantom_datasets` (``synthetic_phantom_a`` annotates the organ,
``synthetic_phantom_b`` the box and a marker), written beside them, each with its own task registry:

- ``old``: ``synthetic_phantom_a`` alone (the old model's task: the organ, id 96);
- ``new_organ``: ``synthetic_phantom_b``'s images annotated with the organ, as a new dataset
  ``synthetic_phantom_b_organ`` whose one task (the same structure, a new task id) is new to the old model;
- ``new``: a new dataset ``synthetic_phantom_c`` on ``synthetic_phantom_b``'s images annotating all three structures
  (organ, box, marker) as three new tasks: the same structure as an old task, and two structures the old model was
  never taught.

Labels of the new datasets are written from each case's ``structures`` map. Every name says "synthetic".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..io.files import read_json_object, write_json
from ..io.nifti import write_nifti
from ..phantoms import PHANTOM_STRUCTURES
from .phantom_datasets import PHANTOM_TASK_NAMES, phantom_registry

#: Ids of the new tasks: after the phantom ids (96-98).
NEW_TASK_ID_START = 110
#: New datasets -> {structure: label value}, all on synthetic_phantom_b's images.
NEW_DATASETS = {
    "synthetic_phantom_b_organ": {"organ": 1},
    "synthetic_phantom_c": {"organ": 1, "box": 2, "marker": 3},
}


def _registry(datasets: dict[str, dict[str, Any]], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "description": "Synthetic phantom datasets for learning after release.",
        "datasets": datasets,
        "tasks": tasks,
    }


def _relabel(item: dict[str, str], root: Path, dataset: str, annotated: dict[str, int]) -> dict[str, str]:
    """An item of ``dataset``: the same image, a label written from its structures map."""
    structures = nib.load(root / item["structures"])
    values = np.asarray(structures.dataobj)
    label = np.zeros(values.shape, dtype=np.uint8)
    for structure, value in annotated.items():
        label[values == PHANTOM_STRUCTURES[structure]] = value
    name = f"{dataset}/{Path(item['image']).name.replace('_image', '_label')}"
    if not (root / name).is_file():
        write_nifti(root / name, label, structures.affine, np.uint8)
    return {"image": item["image"], "label": name, "dataset": dataset}


def make_increment_datalists(phantoms: dict[str, Any]) -> dict[str, str]:
    """Write the ``old``, ``new_organ`` and ``new`` datalists (with their registries) beside the phantoms; return
    {name: datalist path}."""
    root = Path(phantoms["root"])
    content = read_json_object(phantoms["datalist"], "datalist")
    base = phantom_registry()
    old = "synthetic_phantom_a"
    written = {}
    old_tasks = [t for t in base["tasks"] if t["dataset"] == old]
    write_json(_registry({old: base["datasets"][old]}, old_tasks), root / "registry_old.json")
    write_json(
        {
            "task_registry": "registry_old.json",
            **{s: [i for i in content[s] if i["dataset"] == old] for s in ("training", "validation")},
        },
        root / "old.json",
    )
    written["old"] = str(root / "old.json")
    next_id = NEW_TASK_ID_START
    for short, dataset in (("new_organ", "synthetic_phantom_b_organ"), ("new", "synthetic_phantom_c")):
        annotated = NEW_DATASETS[dataset]
        tasks = []
        for structure, label in annotated.items():
            tasks.append({"id": next_id, "dataset": dataset, "name": PHANTOM_TASK_NAMES[structure], "label": label})
            next_id += 1
        entry = {**base["datasets"]["synthetic_phantom_b"], "source": "synthetic (scripts.phantoms), relabelled"}
        write_json(_registry({dataset: entry}, tasks), root / f"registry_{short}.json")
        sections = {
            s: [_relabel(i, root, dataset, annotated) for i in content[s] if i["dataset"] == "synthetic_phantom_b"]
            for s in ("training", "validation")
        }
        write_json({"task_registry": f"registry_{short}.json", **sections}, root / f"{short}.json")
        written[short] = str(root / f"{short}.json")
    return written
