"""One rule for naming a case's outputs, shared by inference and evaluation."""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

#: Suffixes removed from an input's file name to name its case (longest first).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


def case_name(path: str | os.PathLike) -> str:
    """``scan.nii.gz`` -> ``scan``; a DICOM series folder -> the folder's name."""
    name = Path(str(path).rstrip("/\\")).name
    lowered = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def assign_case_names(cases: Sequence[MutableMapping[str, Any]], path_key: str = "image") -> None:
    """Set each case's ``name``: its :func:`case_name`, made unique by the parent folder, then a counter."""
    names = [case_name(case[path_key]) for case in cases]
    counts = {name: names.count(name) for name in names}
    used: set[str] = set()
    for case, name in zip(cases, names):
        if counts[name] > 1:
            name = f"{Path(str(case[path_key])).parent.name}_{name}"
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate)
        case["name"] = candidate
