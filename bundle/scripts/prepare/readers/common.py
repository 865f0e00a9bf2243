"""Pieces several readers share: natural sort order and image/label pairs found by id."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from ...registry import TaskRegistry
from ..cases import Found, SourceCase, Volume, case_name
from ..geometry import read_nifti


def natural_key(text: str) -> tuple:
    """``IMG-0004-00010`` after ``IMG-0004-00009``: digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def matching(src: Path, pattern: str, regex: str) -> dict[str, Path]:
    """Files under ``src`` (any depth) whose name matches ``regex``, by the regex's first group (the case id)."""
    found: dict[str, Path] = {}
    for path in sorted(src.rglob(pattern)):
        match = re.fullmatch(regex, path.name)
        if match and path.is_file():
            found.setdefault(match.group(1), path)
    return found


def pairs(
    dataset: str, images: Mapping[str, Path], labels: Mapping[str, Path], ids: Iterable[str] | None = None
) -> Found:
    """One case per id with an image and a label; an id with only one of them is a problem of that case."""
    found = Found()
    ids = sorted(set(images) | set(labels), key=natural_key) if ids is None else list(ids)
    for official in ids:
        key: int | str = int(official) if official.isdigit() else official
        name = case_name(dataset, key)
        if official not in labels:
            found.problems.append((official, name, f"missing case: {images[official]} has no label file"))
        elif official not in images:
            found.problems.append((official, name, f"missing case: {labels[official]} has no image file"))
        else:
            files = {"image": str(images[official]), "label": str(labels[official])}
            found.cases.append(SourceCase(dataset, official, name, files))
    return found


def load_pair(case: SourceCase, registry: TaskRegistry) -> tuple[Volume, Volume]:
    """The case's image and label NIfTI files as they are."""
    return read_nifti(case.files["image"]), read_nifti(case.files["label"])
