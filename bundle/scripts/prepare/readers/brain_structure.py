"""The brain-structure set of the published model: T1 scans with grey matter, white matter and CSF probability maps.

Release: the folder layout the published ``brain_structure_3d.py`` reads, ``{train,valid,test}/image/<id>_img.nii``
and ``{train,valid,test}/mask/<id>_probmask_{graymatter,whitematter,csf}.nii`` (``.nii.gz`` also read); ids are
``dlbs_NNNNNNN`` (Dallas Lifespan Brain Study scans; only these are in the official splits).

The label is the most probable of background, grey matter, white matter and CSF, background's probability being
1 − (the sum of the three maps). The published rule made a voxel background only where all three maps were exactly
0, so every voxel with any tissue probability became tissue (an over-segmented brain boundary). Native grid: the maps
are not resampled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...registry import TaskRegistry
from ..cases import Found, SourceCase, Volume
from ..geometry import check_same_grid, read_nifti
from ..labels import label_of
from .common import matching, pairs

DATASETS = ("brain_structure",)
RELEASE = (
    "brain structures: {train,valid,test}/image/<id>_img.nii and mask/<id>_probmask_{graymatter,whitematter,csf}.nii"
)
#: Class name of the task registry -> the file-name part of its probability map.
MAPS = {"gray matter": "graymatter", "white matter": "whitematter", "cerebrospinal fluid": "csf"}


def _map_path(image: Path, official: str, part: str) -> Path | None:
    for suffix in (".nii", ".nii.gz"):
        path = image.parent.parent / "mask" / f"{official}_probmask_{part}{suffix}"
        if path.is_file():
            return path
    return None


def find(src: Path, dataset: str) -> Found:
    images = {
        k: p for k, p in matching(src, "*_img.nii*", r"(.+)_img\.nii(?:\.gz)?").items() if p.parent.name == "image"
    }
    labels = {}
    for official, image in images.items():
        maps = [_map_path(image, official, part) for part in MAPS.values()]
        if all(maps):
            labels[official] = maps[0]
    found = pairs(dataset, images, labels)
    for case in found.cases:
        for name, part in MAPS.items():
            case.files[name] = str(_map_path(Path(case.files["image"]), case.official_id, part))
    return found


def load(case: SourceCase, registry: TaskRegistry) -> tuple[Volume, Volume]:
    image = read_nifti(case.files["image"])
    maps = [check_same_grid(image, read_nifti(case.files[name])).array.astype(np.float32) for name in MAPS]
    probabilities = np.stack([np.clip(1.0 - np.sum(maps, axis=0), 0.0, None), *maps])
    values = np.array([0, *(label_of(registry, case.dataset, name) for name in MAPS)], dtype=np.uint8)
    return image, Volume(values[np.argmax(probabilities, axis=0)], image.affine.copy())
