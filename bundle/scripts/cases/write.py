"""A ``CaseResult``'s files on the input's own grid: written together or not at all, never over a user's files by
accident.

File names (``NAME`` = the case name of ``scripts.io.naming``; ``TASK`` = the label's name as a slug; ``EXT`` =
``.nii.gz``, or ``.nrrd`` with ``--output_format nrrd``): ``NAME_seg.EXT`` label map, ``NAME_seg.json`` sidecar,
``NAME_task-TASK.EXT`` binary masks (optional), ``NAME_prob-TASK.EXT`` probabilities (optional), ``NAME_overlay.png``
quick-look picture (optional), ``NAME_seg.dcm`` DICOM SEG (``--output_format dicom_seg``, DICOM inputs),
``NAME_stats.json`` per-structure statistics (``--statistics true``).

A DICOM SEG that cannot be made (the input is no DICOM series, the series lacks what a SEG references, a task has no
code) leaves the case's other files written and committed, and fails the case with one line saying why.

Every file of a case is written into a private staging folder inside the output folder, then moved into place, the
sidecar last: a case whose sidecar exists and lists only present files is complete. Files of an earlier run of the
same case that this run does not write again are removed when it commits, so a folder never mixes two runs' outputs
for one case.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..case_engine import AlreadyComplete
from ..errors import CaseError, SetupError, one_line
from ..io.files import read_json_object, write_json
from ..io.nifti import COMPRESSION_LEVELS, write_nifti
from ..io.nrrd import write_nrrd
from ..io.output_folder import OutputFolder
from ..registry import slug
from ..registry.codes import SegmentCodes
from .case import CaseResult, NativeGrid
from .statistics import case_intensities, statistics_rows, structure_statistics, write_statistics_csv

MERGE_RULE = "mean probability of the listed tasks"
LABEL_RULE = "each voxel: the label whose probability is highest and above the threshold; 0 = none"
#: ``--output_format`` -> the extension of the label map, masks and probabilities (``dicom_seg``: NIfTI plus the SEG).
OUTPUT_FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "dicom_seg": ".nii.gz"}
#: Keys of a sidecar that name files of the case (what ``is_complete`` checks and a later run replaces).
LISTED_FILES = ("label_map", "overlay", "dicom_seg", "statistics")


@dataclass
class OutputPaths:
    label_map: Path
    sidecar: Path
    overlay: Path | None
    masks: dict[int, Path]
    probabilities: dict[int, Path]
    dicom_seg: Path | None = None
    statistics: Path | None = None

    def all(self) -> list[Path]:
        extra = [p for p in (self.overlay, self.dicom_seg, self.statistics) if p is not None]
        return [self.label_map, self.sidecar, *extra, *self.masks.values(), *self.probabilities.values()]


class CaseOutput:
    """The files of one case, staged; ``commit`` moves them into the output folder (sidecar last)."""

    def __init__(self, staging: Path, replaces: Sequence[Path], compression: str = "default") -> None:
        self.staging = staging
        self.compression = compression
        self.replaces = list(replaces)
        self.written: list[tuple[Path, Path]] = []  # (staged, final)

    def _stage(self, final: Path) -> Path:
        staged = self.staging / final.name
        self.written.append((staged, final))
        return staged

    def volume(self, final: Path, array: np.ndarray, grid: NativeGrid) -> None:
        if tuple(array.shape) != grid.shape:
            raise CaseError(f"{final}: internal shape mismatch {array.shape} vs input {grid.shape}")
        if final.name.endswith(".nrrd"):
            write_nrrd(self._stage(final), array, grid.affine, like=grid.nrrd_header, compression=self.compression)
        else:
            write_nifti(self._stage(final), array, grid.affine, like=grid.nifti_header, compression=self.compression)

    def picture(self, final: Path, draw: Callable[[Path], None]) -> None:
        draw(self._stage(final))

    def file(self, final: Path, write: Callable[[Path], Any]) -> None:
        """Any other file of the case: ``write`` writes it to the staging path it is given."""
        staged = self.staging / final.name
        write(staged)
        self.written.append((staged, final))

    def sidecar(self, final: Path, content: dict[str, Any]) -> None:
        write_json(content, self._stage(final))

    def commit(self) -> None:
        finals = {final for _, final in self.written}
        for stale in self.replaces:
            if stale not in finals:
                stale.unlink(missing_ok=True)
        ordered = sorted(self.written, key=lambda pair: pair[1].suffix == ".json")  # sidecar last
        for staged, final in ordered:
            os.replace(staged, final)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class CaseWriter:
    """Knows the output names of a case, when a case is complete, and what may be replaced.

    ``label_names``: every label name a run can write (``task_selection.output_label_names``), so that an earlier
    run's masks of other labels are found by their literal names. ``compression``: ``fast`` or ``default`` gzip
    (``scripts.io.nifti.COMPRESSION_LEVELS``). ``output_format``: a key of ``OUTPUT_FORMATS``; ``dicom_seg`` needs
    ``segment_codes_file`` (the code table) and ``metadata_file`` (the bundle's name and version for the SEG's
    algorithm identification). ``statistics``: per-structure statistics of the input's values, which
    ``intensities`` (the inference's loading transforms, input dict -> ``image``) reads again from the source in the
    writer: holding every read-ahead case's native image until its write would cost far more memory than one
    re-read at a time.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        overwrite: bool = False,
        skip_existing: bool = False,
        save_task_masks: bool = False,
        save_probabilities: bool = False,
        save_overlay: bool = False,
        label_names: Sequence[str] = (),
        compression: str = "default",
        output_format: str = "nifti",
        statistics: bool = False,
        intensities: Callable[[dict], dict] | None = None,
        segment_codes_file: str | os.PathLike | None = None,
        metadata_file: str | os.PathLike | None = None,
    ) -> None:
        self.folder = OutputFolder(output_dir)
        self.label_names = tuple(label_names)
        self.compression = str(compression)
        self.output_dir = self.folder.path
        self.overwrite = bool(overwrite)
        self.skip_existing = bool(skip_existing)
        self.save_task_masks = bool(save_task_masks)
        self.save_probabilities = bool(save_probabilities)
        self.save_overlay = bool(save_overlay)
        self.output_format = str(output_format)
        self.statistics = bool(statistics)
        self.intensities = intensities
        self.segment_codes_file = segment_codes_file
        self.metadata_file = metadata_file
        self.segment_codes: SegmentCodes | None = None
        self.algorithm: Any = None
        self.statistics_rows: list[dict[str, Any]] = []
        self.kept: list[str] = []  # complete cases skipped under --skip_existing (their statistics join the table)

    @property
    def needs_masks(self) -> bool:
        """Per-label masks are needed: written as files, or as the segments of a DICOM SEG (overlaps kept)."""
        return self.save_task_masks or self.output_format == "dicom_seg"

    def prepare(self, lock: bool = True) -> Path:
        """Check the settings, create, check and lock the output folder (before any case is computed). ``lock``
        False: another process of the same run (a ``torchrun`` rank) holds the lock."""
        if self.compression not in COMPRESSION_LEVELS:
            raise SetupError(
                f"--compression: expected one of {', '.join(COMPRESSION_LEVELS)}, got {self.compression!r}"
            )
        if self.output_format not in OUTPUT_FORMATS:
            raise SetupError(
                f"--output_format: expected one of {', '.join(OUTPUT_FORMATS)}, got {self.output_format!r}"
            )
        if self.output_format == "dicom_seg":
            self._prepare_dicom_seg()
        if self.statistics and self.intensities is None:
            raise SetupError("--statistics true needs the input's reading transforms (the writer's 'intensities')")
        return self.folder.claim(lock=lock)

    def _prepare_dicom_seg(self) -> None:
        from ..io.dicom_seg import Algorithm

        try:
            import highdicom  # noqa: F401
        except ImportError:
            raise SetupError(
                "--output_format dicom_seg needs the highdicom package: pip install -r requirements.txt"
            ) from None
        if self.segment_codes_file is None or self.metadata_file is None:
            raise SetupError("--output_format dicom_seg needs the writer's segment_codes_file and metadata_file")
        self.segment_codes = SegmentCodes.load(self.segment_codes_file)
        meta = read_json_object(self.metadata_file, "bundle metadata", SetupError)
        self.algorithm = Algorithm(str(meta.get("name", "Hermes")), str(meta.get("version", "")), "")

    def paths(self, name: str, groups: Sequence[Any] = ()) -> OutputPaths:
        out = self.output_dir
        ext = OUTPUT_FORMATS.get(self.output_format, ".nii.gz")
        return OutputPaths(
            label_map=out / f"{name}_seg{ext}",
            sidecar=out / f"{name}_seg.json",
            overlay=out / f"{name}_overlay.png" if self.save_overlay else None,
            masks={g.label: out / f"{name}_task-{slug(g.name)}{ext}" for g in groups} if self.save_task_masks else {},
            probabilities=(
                {g.label: out / f"{name}_prob-{slug(g.name)}{ext}" for g in groups} if self.save_probabilities else {}
            ),
            dicom_seg=out / f"{name}_seg.dcm" if self.output_format == "dicom_seg" else None,
            statistics=out / f"{name}_stats.json" if self.statistics else None,
        )

    def existing(self, name: str) -> list[Path]:
        """Files of case ``name`` already in the output folder (any run's).

        Names are compared literally, never as patterns: a case called ``a*`` or ``b[1]`` owns only its own files,
        not those of ``ab`` or ``b1``. A case's files are its fixed names, what its sidecar lists, and the mask and
        probability names of every label a run of these weights can write (``label_names``).
        """
        extensions = set(OUTPUT_FORMATS.values())
        candidates = {f"{name}_seg.json", f"{name}_overlay.png", f"{name}_seg.dcm", f"{name}_stats.json"}
        candidates.update(f"{name}_seg{ext}" for ext in extensions)
        candidates.update(self._listed_in_sidecar(name))
        for label in self.label_names:
            for ext in extensions:
                candidates.update((f"{name}_task-{slug(label)}{ext}", f"{name}_prob-{slug(label)}{ext}"))
        return sorted(self.output_dir / c for c in candidates if (self.output_dir / c).is_file())

    def _listed_in_sidecar(self, name: str) -> list[str]:
        """File names an earlier run's sidecar of this case lists (inside the output folder only)."""
        try:
            content = json.loads(self.paths(name).sidecar.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(content, dict):
            return []
        listed = [content.get(key) for key in LISTED_FILES]
        for key in ("task_masks", "probabilities"):
            if isinstance(content.get(key), dict):
                listed.extend(content[key].values())
        return [str(n) for n in listed if isinstance(n, str) and n and Path(n).name == n]

    def is_complete(self, name: str) -> bool:
        """The case's sidecar exists and every file it lists is present."""
        sidecar = self.paths(name).sidecar
        try:
            content = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return False
        listed = [
            *(content.get(key) for key in LISTED_FILES),
            *content.get("task_masks", {}).values(),
            *content.get("probabilities", {}).values(),
        ]
        return all((self.output_dir / name_).is_file() for name_ in listed if name_)

    def check(self, source: str, name: str) -> list[Path]:
        """Decide before any work: skip a complete case (``--skip_existing``), refuse to replace outputs unasked.

        Returns the files this case's commit will replace. Leftovers of an incomplete case (no valid sidecar) are
        replaced under ``--skip_existing`` too: they are an interrupted run's, not a finished result.
        """
        existing = self.existing(name)
        if self.skip_existing and self.is_complete(name):
            self.kept.append(name)
            raise AlreadyComplete(f"already complete in {self.output_dir} (--skip_existing)")
        if existing and not (self.overwrite or self.skip_existing):
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise CaseError(
                f"{source}: output {existing[0]}{more} already exists; pass --overwrite true to replace, "
                "or --skip_existing true to keep complete cases"
            )
        return existing

    def open(self, name: str, replaces: Sequence[Path]) -> CaseOutput:
        return CaseOutput(self.folder.staging(name), replaces, self.compression)

    def write(
        self,
        result: CaseResult,
        replaces: Sequence[Path],
        weights: dict[str, str],
        draw_overlay: Callable[[Path, CaseResult], None] | None = None,
    ) -> OutputPaths:
        """Stage every file of ``result`` (label map, masks, probabilities, overlay), the sidecar last, and commit
        them together; returns the paths written."""
        case = result.case
        with case.clock.stage("write"):
            paths = self.paths(case.name, result.groups)
            output = self.open(case.name, replaces)
            problem = None
            try:
                output.volume(paths.label_map, result.labels, case.native)
                for label, path in paths.masks.items():
                    output.volume(path, result.masks[label], case.native)
                for label, path in paths.probabilities.items():
                    output.volume(path, result.probabilities[label], case.native)
                if paths.overlay is not None and draw_overlay is not None:
                    output.picture(paths.overlay, lambda tmp: draw_overlay(tmp, result))
                content = {**sidecar_content(result, weights, paths), "output_format": self.output_format}
                if paths.statistics is not None:
                    statistics = self.case_statistics(result)
                    output.sidecar(paths.statistics, {"case": case.name, "input": content["input"], **statistics})
                    self.statistics_rows.extend(statistics_rows(case.name, statistics["structures"]))
                if paths.dicom_seg is not None:
                    problem = self.stage_dicom_seg(output, paths, result, weights, content)
                output.sidecar(paths.sidecar, content)
                output.commit()
            finally:
                output.discard()
        if problem is not None:
            raise CaseError(
                f"{case.source}: no DICOM SEG written: {problem}; the other outputs are in {paths.label_map}"
            )
        return paths

    def case_statistics(self, result: CaseResult) -> dict[str, Any]:
        """The per-structure statistics of ``result``'s label map with the input's values, read again here."""
        case = result.case
        assert self.intensities is not None
        values, unit = case_intensities(self.intensities, case)
        names = {group.label: group.name for group in result.groups}
        return {
            "intensity_unit": unit,
            "coordinates": "RAS mm (+x right, +y anterior, +z superior) of voxel centres",
            "structures": structure_statistics(result.labels, values, case.native.affine, names, unit),
        }

    def stage_dicom_seg(
        self, output: CaseOutput, paths: OutputPaths, result: CaseResult, weights: dict[str, str], content: dict
    ) -> str | None:
        """Stage the case's DICOM SEG and describe it in the sidecar ``content``; returns why it cannot be made, or
        None."""
        from ..io.dicom_seg import Segment, source_headers, write_dicom_seg

        assert paths.dicom_seg is not None and self.segment_codes is not None
        content.update(dicom_seg=None, dicom_seg_segments={}, dicom_seg_empty_labels=[], dicom_seg_problem=None)
        try:
            sources = source_headers(result.case.native.dicom_files)
            segments, empty = [], []
            for group in result.groups:
                task = group.members[0].name  # a label's tasks share one name (amos_ct/spleen: spleen)
                code = self.segment_codes.get(task)
                if code is None:
                    raise CaseError(
                        f"task {task!r} has no code in {self.segment_codes.source}; add it there (or 'generic')"
                    )
                mask = result.masks[group.label]
                if mask.any():
                    segments.append(Segment(group.label, group.name, code, mask))
                else:
                    empty.append(group.label)
            content["dicom_seg_empty_labels"] = empty
            if not segments:
                content["dicom_seg_problem"] = "every label is empty: a DICOM SEG needs at least one segment"
                return None
            algorithm = replace(self.algorithm, weights_sha256=str(weights.get("sha256", "")))
            try:
                output.file(paths.dicom_seg, lambda tmp: write_dicom_seg(tmp, sources, segments, algorithm))
            except Exception as err:  # highdicom refuses what it cannot encode; the other outputs still count
                raise CaseError(f"highdicom cannot build the SEG of this series ({one_line(err)})") from err
        except CaseError as err:
            content["dicom_seg_problem"] = str(err)
            return str(err)
        content["dicom_seg"] = paths.dicom_seg.name
        content["dicom_seg_segments"] = {
            str(k + 1): {"label": s.label, "name": s.name, **s.code.as_json()} for k, s in enumerate(segments)
        }
        return None

    def write_statistics_table(self, rows: Sequence[dict[str, Any]] | None = None) -> Path | None:
        """The batch table (``statistics.csv``): a row per case and structure, complete cases a ``--skip_existing``
        run kept included (from their ``NAME_stats.json``)."""
        rows = list(self.statistics_rows if rows is None else rows)
        for name in self.kept:
            try:
                kept = json.loads((self.output_dir / f"{name}_stats.json").read_text())
                rows.extend(statistics_rows(name, kept["structures"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if not rows:
            return None
        return write_statistics_csv(rows, self.output_dir / "statistics.csv", overwrite=self.overwrite)


def sidecar_content(result: CaseResult, weights: dict[str, str], paths: OutputPaths) -> dict[str, Any]:
    """The JSON sidecar of a label map: what each label value means and how the result was made."""
    case = result.case
    counts = np.bincount(result.labels.reshape(-1), minlength=len(result.groups) + 1)
    label_table = {"0": {"name": "background"}}
    for group in result.groups:
        label_table[str(group.label)] = {**group.as_json(), "voxels": int(counts[group.label])}
    content = {
        "input": str(Path(case.item["image"]).resolve()),
        "input_format": case.format,
        "label_map": paths.label_map.name,
        "labels": label_table,
        "label_rule": LABEL_RULE,
        "merge_rule": MERGE_RULE,
        "task_masks": {str(k): p.name for k, p in paths.masks.items()},
        "probabilities": {str(k): p.name for k, p in paths.probabilities.items()},
        "overlay": paths.overlay.name if paths.overlay else None,
        "statistics": paths.statistics.name if paths.statistics else None,
        "modality": case.modality.as_json(),
        "weights": weights,
        "geometry": case.native.as_json(),
        "settings": result.settings,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if result.settings.get("profile"):
        content["profile_seconds"] = case.clock.as_json()
    return content
