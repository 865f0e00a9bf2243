"""What the built-in sample suite contains: its packages, datasets, AAL grouping, task ids, registry and datalist.

Everything the suite writes besides the images is derived here, and :func:`recipe_digest` fingerprints it, so an
edit to any of it makes cached copies rebuild. Dataset names, task ids (from 72, fixed order) and file names are
public: tests, demos and users' commands refer to them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..phantoms import DRAWING_VERSION
from ..registry import PUBLISHED_NUM_TASKS

#: Bump when the written files change in a way the recipe below does not capture.
#: 2: the datalist names its own registry; the registry leaves the modality table to the base file.
#: 3: registry entries declare the training crop and slice spacing (crop_margin, crop_min_size, ...).
SUITE_VERSION = 3

# ------------------------------------------------------------------------------------------------ packages
PYRADIOMICS_VERSION = "3.0.1"
PYRADIOMICS_ARCHIVE = f"pyradiomics-{PYRADIOMICS_VERSION}.tar.gz"
PYRADIOMICS_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
MRICRON_PACKAGE = "mricron-data"
MRICRON_TEMPLATES = "usr/share/mricron/templates"
MRICRON_FILES = ("ch2.nii.gz", "aal.nii.gz", "aal.nii.txt")

# ------------------------------------------------------------------------------------------------- layout
DATALIST_FILE = "datalist.json"
REGISTRY_FILE = "task_registry.json"
MANIFEST_FILE = "manifest.json"
AAL_GROUPS_FILE = "aal_groups.json"
#: Folders under the suite's root: archives while building, and the files taken out of them.
DOWNLOADS, RAW_PYRADIOMICS, RAW_MRICRON = "downloads", "raw/pyradiomics", "raw/mricron"

# ------------------------------------------------------------------------------------------ synthetic PET
SYNTHETIC_PET_CASES = 3
#: Case ``i`` is drawn from ``numpy.random.default_rng([PET_SEED, i])`` (the seed of the first suite version).
PET_SEED = 1

# AAL region name (side suffix _L/_R removed) -> structure. Lobes follow the gyri's usual lobar assignment:
# precentral, paracentral lobule and Rolandic operculum go with the frontal lobe, postcentral and precuneus with
# the parietal lobe, fusiform, Heschl and the temporal poles with the temporal lobe; insula, cingulate gyrus,
# hippocampus, parahippocampal gyrus and amygdala form the limbic group; caudate, putamen, pallidum and thalamus the
# deep grey nuclei; all cerebellar hemisphere lobules and the vermis the cerebellum. Both hemispheres together.
AAL_GROUPS: tuple[tuple[str, str], ...] = (
    ("frontal lobe cortex", r"Precentral|Frontal_.+|Rolandic_Oper|Supp_Motor_Area|Olfactory|Rectus|Paracentral_Lobule"),
    ("parietal lobe cortex", r"Postcentral|Parietal_Sup|Parietal_Inf|SupraMarginal|Angular|Precuneus"),
    ("temporal lobe cortex", r"Temporal_.+|Heschl|Fusiform"),
    ("occipital lobe cortex", r"Occipital_.+|Calcarine|Cuneus|Lingual"),
    ("insula and limbic grey matter", r"Insula|Cingulum_.+|Hippocampus|ParaHippocampal|Amygdala"),
    ("deep grey nuclei", r"Caudate|Putamen|Pallidum|Thalamus"),
    ("cerebellum", r"Cerebelum_.+|Vermis(_.+)?"),
)


@dataclass(frozen=True)
class SampleDataset:
    """One dataset of the suite: where its cases come from and which tasks its labels carry."""

    name: str
    modality: str  # a modality name of configs/task_registry.json
    origin: str  # "pyradiomics", "mricron" or "synthetic": which converter writes its cases
    source: str  # the registry entry's "source": package, licence, citation
    cases: tuple[str, ...]
    tasks: tuple[str, ...]  # task names for label values 1..k
    validation_case: str
    intensity_aug_prob: float
    geometry: tuple[tuple[str, Any], ...]  # registry training-geometry fields (scripts.data.spatial)


_PYRADIOMICS = f"sample (pyradiomics {PYRADIOMICS_VERSION}, BSD-3)"
# Training crops as the published preparation's: lesion datasets take its autoPET rule (a margin and at least one
# published window, 128 voxels at 1.5 mm, of context around the lesions), the whole-brain atlas is not cropped (like
# brain structures), the synthetic PET is autoPET's twin (its slice spacing kept when --native_slice_spacing true).
_LESION = (("crop_margin", [20, 20, 20]), ("crop_min_size", [128, 128, 128]))
_WHOLE = (("crop_margin", None),)
_PET = (("crop_margin", [20, 30, 30]), ("crop_min_size", [128, 128, 128]), ("keep_native_slice_spacing", True))
DATASETS: tuple[SampleDataset, ...] = (
    SampleDataset(
        "sample_lung_ct", "ct", "pyradiomics", _PYRADIOMICS, ("lung1", "lung2"), ("lung tumor",), "lung2", 0.1, _LESION
    ),
    SampleDataset(
        "sample_brain_t1",
        "t1",
        "pyradiomics",
        _PYRADIOMICS,
        ("brain1", "brain2"),
        ("brain lesion",),
        "brain2",
        0.2,
        _LESION,
    ),
    SampleDataset(
        "sample_breast_mr", "mr", "pyradiomics", _PYRADIOMICS, ("breast1",), ("breast lesion",), "breast1", 0.2, _LESION
    ),
    SampleDataset(
        "sample_colin27_t1",
        "t1",
        "mricron",
        "sample (Debian mricron-data: Colin27 T1 with AAL atlas, BSD-3; cite Holmes 1998, Tzourio-Mazoyer " "2002)",
        ("colin27",),
        tuple(name for name, _ in AAL_GROUPS),
        "colin27",
        0.2,
        _WHOLE,
    ),
    SampleDataset(
        "synthetic_pet",
        "pet",
        "synthetic",
        "synthetic (seeded PET-like phantom, scripts.phantoms)",
        tuple(f"synthetic_pet{i}" for i in range(SYNTHETIC_PET_CASES)),
        ("synthetic lesion",),
        f"synthetic_pet{SYNTHETIC_PET_CASES - 1}",
        0.1,
        _PET,
    ),
)


def datasets_from(origin: str) -> tuple[SampleDataset, ...]:
    return tuple(dataset for dataset in DATASETS if dataset.origin == origin)


def case_files(dataset: SampleDataset, case: str) -> dict[str, str]:
    """A case's datalist item: its files relative to the suite's root, and its dataset."""
    return {
        "image": f"{dataset.name}/{case}_image.nii.gz",
        "label": f"{dataset.name}/{case}_label.nii.gz",
        "dataset": dataset.name,
    }


def suite_paths(root: Path) -> dict[str, str]:
    """The files a caller of the suite needs: ``root``, ``datalist``, ``task_registry`` and ``manifest``."""
    return {
        "root": str(root),
        "datalist": str(root / DATALIST_FILE),
        "task_registry": str(root / REGISTRY_FILE),
        "manifest": str(root / MANIFEST_FILE),
    }


# -------------------------------------------------------------------------------------- registry, datalist
def task_entries(first_id: int = PUBLISHED_NUM_TASKS) -> list[dict[str, Any]]:
    """Task list in the fixed dataset order, ids counting up from ``first_id`` (same ids on every run)."""
    tasks, next_id = [], first_id
    for dataset in DATASETS:
        for label, name in enumerate(dataset.tasks, start=1):
            tasks.append({"id": next_id, "dataset": dataset.name, "name": name, "label": label})
            next_id += 1
    return tasks


def sample_registry() -> dict[str, Any]:
    """Extra registry merged on top of ``configs/task_registry.json`` (which owns the modality table)."""
    datasets = {
        dataset.name: {
            "modality": dataset.modality,
            "sample_weight": 1.0,
            "intensity_aug_prob": dataset.intensity_aug_prob,
            "source": dataset.source,
            **dict(dataset.geometry),
        }
        for dataset in DATASETS
    }
    return {
        "description": "Built-in sample suite (scripts.sample_suite): real pyradiomics and mricron-data cases plus the "
        f"synthetic PET phantom. Task ids from {PUBLISHED_NUM_TASKS} upwards in a fixed order.",
        "datasets": datasets,
        "tasks": task_entries(),
    }


def sample_datalist() -> dict[str, Any]:
    """Datalist naming its own registry; each dataset's validation case is held out when it has 2+ cases."""
    datalist: dict[str, Any] = {"task_registry": REGISTRY_FILE, "training": [], "validation": []}
    for dataset in DATASETS:
        for case in dataset.cases:
            if case != dataset.validation_case or len(dataset.cases) == 1:
                datalist["training"].append(case_files(dataset, case))
        datalist["validation"].append(case_files(dataset, dataset.validation_case))
    return datalist


def recipe_digest() -> str:
    """Fingerprint of what the code would write, so an edit to the catalogue or the drawing rebuilds the cache."""
    recipe = {
        "version": SUITE_VERSION,
        "registry": sample_registry(),
        "datalist": sample_datalist(),
        "aal_groups": AAL_GROUPS,
        "packages": [PYRADIOMICS_ARCHIVE, PYRADIOMICS_SHA256, MRICRON_PACKAGE],
        "pet": [SYNTHETIC_PET_CASES, PET_SEED, DRAWING_VERSION],
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
