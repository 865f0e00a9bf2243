"""Collect the cases to segment from ``--input``: a NIfTI/NRRD file, a folder, a DICOM series folder or a datalist.

- a file ``*.nii``, ``*.nii.gz`` or ``*.nrrd``: one case;
- a folder with DICOM files directly inside: one DICOM series case;
- any other folder: every NIfTI/NRRD file in it, and every subfolder holding DICOM files (one series each);
- a ``*.json`` datalist: the items of its "testing" section (or, without one, of every section), read by the one
  datalist reader (``scripts.data.datalist``); an item may name its ``modality`` and ``dataset``.
Problems found here (missing files, unsupported types, bad items) are reported per input; they never stop the
other cases. Output names follow ``scripts.io.naming``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.datalist import DatalistError, read_datalist
from ..io.dicom import dicom_files_in
from ..io.files import read_json_object
from ..io.naming import assign_case_names, case_name
from ..registry import TaskRegistry

DATALIST_SECTIONS = ("training", "validation", "testing")


@dataclass
class CaseCollection:
    """Cases ready to run and ``(source, problem)`` pairs for inputs that cannot be run."""

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


def _case(path: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"image": str(path), "source": str(path), "format": image_format(path), **(extra or {})}


def _add_path(path: Path, found: CaseCollection, extra: dict[str, Any] | None = None) -> None:
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
        found.problems.append(
            (
                str(path),
                "unsupported file type; expected .nii, .nii.gz, .nrrd, a DICOM series " "folder or a datalist .json",
            )
        )
    else:
        found.cases.append(_case(path, extra))


def _from_folder(folder: Path, found: CaseCollection) -> None:
    if dicom_files_in(folder):
        found.cases.append(_case(folder))
        return
    for entry in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if (entry.is_file() and image_format(entry)) or (entry.is_dir() and dicom_files_in(entry)):
            found.cases.append(_case(entry))
    if not found.cases:
        found.problems.append(
            (str(folder), "no NIfTI (.nii, .nii.gz), NRRD (.nrrd) or DICOM series found in this folder")
        )


def _from_datalist(path: Path, registry: TaskRegistry, found: CaseCollection) -> None:
    try:
        content = read_json_object(path, "datalist", DatalistError)
        sections = ["testing"] if "testing" in content else [s for s in DATALIST_SECTIONS if s in content]
        if not sections:
            raise DatalistError(f"datalist {path}: no 'testing' (or training/validation) list of items")
        datalist = read_datalist(
            path, registry, sections, require_label=False, require_dataset=False, check_files=False, check_labels=False
        )
    except DatalistError as err:
        found.problems.append((str(path), str(err)))
        return
    for problem in datalist.problems:
        found.problems.append((f"{path} {problem.section} item {problem.index}", problem.message))
    seen: set[str] = set()
    for section in sections:
        for item in datalist.section(section):
            if item["image"] in seen:  # the same image in two sections is segmented once
                continue
            seen.add(item["image"])
            extra = {key: item[key] for key in ("modality", "dataset") if item.get(key)}
            _add_path(Path(item["image"]), found, extra)


def described(case: dict[str, Any]) -> dict[str, Any]:
    """A case given as just ``{"image": path}`` (e.g. by an application filling ``dataset#data``) with the keys the
    step needs: ``source``, ``format`` and ``name``."""
    if all(key in case for key in ("source", "format", "name")):
        return case
    path = Path(str(case["image"]))
    described_case = {**_case(path), **case}
    described_case.setdefault("name", case_name(path))
    return described_case


def collect_cases(input_path: Any, registry: TaskRegistry) -> CaseCollection:
    """Every case named by ``input_path``; never raises for a bad input, it lists it in ``problems``."""
    found = CaseCollection()
    if input_path is None or str(input_path).strip() == "":
        found.problems.append(
            ("--input", "no input given; pass --input PATH (file, folder, DICOM folder or " "datalist .json)")
        )
        return found
    path = Path(str(input_path)).expanduser()
    if not path.exists():
        found.problems.append((str(path), "no such file or folder"))
    elif path.is_dir():
        _from_folder(path, found)
    elif path.name.lower().endswith(".json"):
        _from_datalist(path, registry, found)
    else:
        _add_path(path, found)
    assign_case_names(found.cases)
    return found
