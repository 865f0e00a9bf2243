"""A DICOM Segmentation (SEG) object of a result on a DICOM series' own grid, through ``highdicom``.

One binary segment per non-empty label (overlaps kept: each segment is its own mask), referencing the source series'
instances frame by frame and its frame of reference, so a viewer (OHIF, 3D Slicer, a PACS) overlays it on the scan.
Masks are in the bundle's DICOM voxel order (column, row, slice), slices in the order of ``source_files``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from ..errors import CaseError
from ..registry.codes import SegmentCode

#: What a SEG must copy from or reference in its source series (besides pixel geometry, which the reader checked).
REQUIRED_SOURCE_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
)


@dataclass
class Segment:
    """One segment: its label value in the label map, its name and code, and its binary mask."""

    label: int
    name: str
    code: SegmentCode
    mask: np.ndarray


@dataclass(frozen=True)
class Algorithm:
    """What made the segments: recorded in every segment's algorithm identification and in the SEG's equipment."""

    name: str
    version: str
    weights_sha256: str


#: Type 2 attributes of the patient and study modules the SEG copies from its source: they may be empty but must be
#: present, and anonymised series often drop them entirely; an absent one is copied as empty (what the standard
#: allows), not a reason to refuse the SEG.
EMPTY_IF_ABSENT = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def source_headers(files: Sequence[str]) -> list[pydicom.Dataset]:
    """The source series' headers (no pixel data), in slice order, checked for what a SEG references."""
    if not files:
        raise CaseError("the input is not a DICOM series; a DICOM SEG can only reference a DICOM series")
    headers = []
    for path in files:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True, force=True))
        except Exception as err:  # the series changed since it was read: pydicom raises several types
            raise CaseError(f"{path}: cannot read the source slice again ({type(err).__name__}: {err})") from err
    for path, ds in zip(files, headers):
        missing = [key for key in REQUIRED_SOURCE_ATTRIBUTES if key not in ds or ds.get(key) in (None, "")]
        if missing:
            raise CaseError(f"{path}: the series lacks {', '.join(missing)}, which a DICOM SEG must reference")
    for ds in headers:
        for key in EMPTY_IF_ABSENT:
            if key not in ds:
                setattr(ds, key, "")
    if len({str(ds.FrameOfReferenceUID) for ds in headers}) > 1:
        raise CaseError(f"{Path(files[0]).parent}: the slices have different FrameOfReferenceUIDs")
    return headers


def segment_description(number: int, segment: Segment, algorithm: Any) -> Any:
    import highdicom as hd

    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.name[:64],
        segmented_property_category=segment.code.category,
        segmented_property_type=segment.code.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=[segment.code.region] if segment.code.region is not None else None,
    )
    if segment.code.laterality is not None:  # e.g. Kidney + Left: the type's modifier (PS3.3 C.8.20.4)
        modifier = hd.sr.CodedConcept.from_code(segment.code.laterality)
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    return description


def write_dicom_seg(
    path: str | os.PathLike, sources: Sequence[pydicom.Dataset], segments: Sequence[Segment], algorithm: Algorithm
) -> Path:
    """Write the SEG of ``segments`` (each mask column, row, slice; slices in the order of ``sources``) to ``path``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version,
        parameters={"weights_sha256": algorithm.weights_sha256} if algorithm.weights_sha256 else None,
    )
    # (column, row, slice) -> (frame, row, column, segment), one frame per source slice
    pixels = np.stack([np.transpose(s.mask.astype(bool), (2, 1, 0)) for s in segments], axis=-1)
    first = sources[0]
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(k + 1, s, identification) for k, s in enumerate(segments)],
        series_instance_uid=hd.UID(),
        series_number=int(getattr(first, "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="hermes_universal_segmentation",
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version,
        device_serial_number=(algorithm.weights_sha256 or "unknown")[:16],
        content_description="Hermes automatic segmentation"[:64],
        content_label="HERMES",
        omit_empty_frames=True,
    )
    seg.save_as(str(path), enforce_file_format=True)
    return Path(path)
