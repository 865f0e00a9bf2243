"""What a reader finds (a source case) and what it loads (image and label volumes in world coordinates)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CaseError


class CaseProblem(CaseError):
    """One case of a download cannot be prepared; the message is the problem, the runner adds the case."""


@dataclass(frozen=True)
class SourceCase:
    """One image/label pair of a download.

    Attributes:
        dataset: the registry dataset.
        official_id: the id the official splits use (``"7"``, ``"img0001"``, ``"A4B5U4"``, ``"PETCT_..._0"``).
        case_id: the prepared case's name (file names, sorted listings): ``<dataset>_<id>[_<part>]``.
        files: what the reader needs, by role (paths as strings).
        sequence: the item's ``modality`` in the datalist (a sequence key of multi-sequence datasets: CHAOS).
        part: which of several cases of one source (M&Ms frame 0 or 1).
    """

    dataset: str
    official_id: str
    case_id: str
    files: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    sequence: str | None = None
    part: int | None = None

    @property
    def source(self) -> str:
        """The file or folder a user should look at when this case fails."""
        first = next(iter(self.files.values()), "")
        return first


@dataclass
class Volume:
    """A 3D array in voxel order of ``affine`` (RAS world, mm), as nibabel and MONAI's readers give it."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


@dataclass
class Found:
    """A reader's view of a download: the cases it found and the problems of incomplete ones (one line each)."""

    cases: list[SourceCase] = field(default_factory=list)
    #: (official id, case id, problem) of cases whose files are incomplete
    problems: list[tuple[str, str, str]] = field(default_factory=list)


def case_name(dataset: str, official_id: Any, part: Any = None) -> str:
    """``lits_0007``, ``bcv_img0001``, ``chaos_1_t2``, ``mnm_A4B5U4_0``: integer ids padded to four digits."""
    text = f"{int(official_id):04d}" if isinstance(official_id, int) else str(official_id)
    return f"{dataset}_{text}" + ("" if part is None else f"_{part}")
