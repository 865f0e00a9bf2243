"""Collect the cases to segment from ``--input``: a NIfTI/NRRD file, a folder, a DICOM series folder or a datalist.

- a file ``*.nii``, ``*.nii.gz`` or ``*.nrrd``: one case;
- a folder with DICOM files directly inside: one DICOM series case;
- any other folder: every NIfTI/NRRD file in it, and every subfolder holding DICOM files (one series each);
- a ``*.json`` datalist: the items of its "testing" section (or, without one, of every section); item paths are
  relative to the datalist's folder; an item may name its ``modality`` and ``dataset``.
Problems found here (missing files, unsupported types) are reported per input; they never stop the other cases.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dicom import dicom_files_in

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd")


@dataclass
class CaseCollection:
    """Cases ready to run and (source, problem) pairs for inputs that cannot be run."""

    cases: list[dict[str, Any]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def image_format(path: Path) -> str | None:
    """``nifti``, ``nrrd`` or ``dicom`` for a supported input, else None."""
    name = path.name.lower()
    if path.is_dir():
        return "dicom" if dicom_files_in(path) else None
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".nrrd"):
        return "nrrd"
    return None


def case_stem(path: Path) -> str:
    """Output name stem: the file name without its image suffix, or the DICOM folder's name."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _case(path: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    item = {"image": str(path), "source": str(path), "format": image_format(path), "name": case_stem(path)}
    item.update(extra or {})
    return item


def _from_folder(folder: Path, found: CaseCollection) -> None:
    if dicom_files_in(folder):
        found.cases.append(_case(folder))
        return
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for entry in entries:
        if (entry.is_file() and image_format(entry)) or (entry.is_dir() and dicom_files_in(entry)):
            found.cases.append(_case(entry))
    if not found.cases:
        found.problems.append((str(folder), "no NIfTI (.nii, .nii.gz), NRRD (.nrrd) or DICOM series found in this folder"))


def _from_datalist(path: Path, found: CaseCollection) -> None:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        found.problems.append((str(path), f"cannot read the datalist JSON ({err})"))
        return
    if isinstance(content, dict):
        items = content.get("testing") or [i for key in ("training", "validation", "testing") for i in content.get(key, [])]
    else:
        items = content if isinstance(content, list) else []
    if not items:
        found.problems.append((str(path), "the datalist has no items (expected a 'testing' list of {\"image\": ...})"))
        return
    seen: set[str] = set()
    for index, item in enumerate(items):
        image = item.get("image") if isinstance(item, dict) else item
        if not isinstance(image, str):
            found.problems.append((f"{path} item {index}", "item has no 'image' path"))
            continue
        image_path = (path.parent / image) if not os.path.isabs(image) else Path(image)
        if str(image_path) in seen:
            continue
        seen.add(str(image_path))
        extra = {k: item[k] for k in ("modality", "dataset") if isinstance(item, dict) and item.get(k)}
        _add_file(image_path, found, extra)


def _add_file(path: Path, found: CaseCollection, extra: dict[str, Any] | None = None) -> None:
    if not path.exists():
        found.problems.append((str(path), "no such file or folder"))
    elif path.is_dir():
        if dicom_files_in(path):
            found.cases.append(_case(path, extra))
        else:
            found.problems.append((str(path), "folder holds no DICOM files"))
    elif path.name.lower().endswith(".dcm"):
        found.problems.append((str(path), "a single DICOM file; pass the folder that holds the whole series"))
    elif image_format(path) is None:
        found.problems.append((str(path), "unsupported file type; expected .nii, .nii.gz, .nrrd, a DICOM series "
                                          "folder or a datalist .json"))
    else:
        found.cases.append(_case(path, extra))


def _unique_names(cases: list[dict[str, Any]]) -> None:
    """Give cases that share a stem distinct output names: parent folder first, then a counter."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case["name"]] = counts.get(case["name"], 0) + 1
    used: set[str] = set()
    for case in cases:
        name = case["name"]
        if counts[name] > 1:
            name = f"{Path(case['image']).parent.name}_{name}"
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate)
        case["name"] = candidate


def collect_cases(input_path: Any) -> CaseCollection:
    """Every case named by ``input_path``; never raises for a bad input, it lists it in ``problems``."""
    found = CaseCollection()
    if input_path is None or str(input_path).strip() == "":
        found.problems.append(("--input", "no input given; pass --input PATH (file, folder, DICOM folder or datalist .json)"))
        return found
    path = Path(str(input_path)).expanduser()
    if not path.exists():
        found.problems.append((str(path), "no such file or folder"))
    elif path.is_dir():
        _from_folder(path, found)
    elif path.name.lower().endswith(".json"):
        _from_datalist(path, found)
    else:
        _add_file(path, found)
    _unique_names(found.cases)
    return found
