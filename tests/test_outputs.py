"""Results where clinicians and their tools look: DICOM SEG of a real CT series (read back with highdicom and pydicom,
frame by frame against the NIfTI masks of the same run), NRRD outputs keeping the input's space directions,
per-structure statistics checked against values computed by hand, and the bad cases (one line each, NIfTI kept).

Weights are a tiny random HermesResUNet (base_channels 4), 32^3 windows, as in test_inference_runs.py.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from scripts.cases.statistics import structure_statistics
from scripts.io.dicom import read_dicom_series
from scripts.registry import TaskRegistry
from scripts.registry.codes import SegmentCodes
from test_inference_runs import (BUNDLE, crop, nrrd_affine, run_in_process, save_dicom_series, save_nifti, save_nrrd,
                                 tilted)
from test_inference_runs import weights  # noqa: F401  (module fixture: tiny random weights)

TASKS = "liver,amos_ct/spleen,left lung"
NAMES = {1: "liver", 2: "amos_ct/spleen", 3: "left lung"}
SLUGS = {1: "liver", 2: "amos_ct-spleen", 3: "left-lung"}


def complete_series(folder: Path) -> Path:
    """Give a series written by ``save_dicom_series`` what a real scanner's has and a SEG must reference."""
    frame_of_reference = generate_uid()
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "P001", "Test^Patient", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.SeriesNumber, ds.Manufacturer = "", 3, "test"
        ds.save_as(path, enforce_file_format=True)
    return folder


@pytest.fixture(scope="module")
def ct(sample_suite) -> tuple[np.ndarray, np.ndarray]:
    """A real CT block (lung1, HU), one 32^3 window after resampling to 1.5 mm."""
    return crop(Path(sample_suite["root"]) / "sample_lung_ct" / "lung1_image.nii.gz", (232, 232, 20), (48, 48, 8))


@pytest.fixture(scope="module")
def seg_run(ct, weights, tmp_path_factory):  # noqa: F811
    """One DICOM SEG run of a real series with shuffled file names: masks and statistics too."""
    hu, affine = ct
    root = tmp_path_factory.mktemp("seg_run")
    series = complete_series(save_dicom_series(root / "ct_series", hu, affine))
    out = root / "out"
    status, text = run_in_process(input=str(series), output_dir=str(out), ckpt_path=str(weights["plain"]), modality="ct",
                             tasks=TASKS, output_format="dicom_seg", save_task_masks=True, statistics=True)
    assert status == 0, text[-3000:]
    return SimpleNamespace(series=series, out=out, text=text, hu=hu, affine=affine,
                           sidecar=json.loads((out / "ct_series_seg.json").read_text()))


def nifti_masks(out: Path, name: str) -> dict[int, np.ndarray]:
    return {label: np.asarray(nib.load(out / f"{name}_task-{slug}.nii.gz").dataobj) for label, slug in SLUGS.items()}


# --- DICOM SEG ------------------------------------------------------------------------------------------------
def test_dicom_seg_frames_land_on_their_source_slices_and_equal_the_nifti_masks(seg_run):
    import highdicom as hd

    out, sidecar = seg_run.out, seg_run.sidecar
    seg_file = out / "ct_series_seg.dcm"
    assert sidecar["dicom_seg"] == seg_file.name and sidecar["dicom_seg_problem"] is None
    masks = nifti_masks(out, "ct_series")
    written = [label for label, mask in masks.items() if mask.any()]
    assert written, "the tiny network labelled nothing; the test would prove nothing"
    assert sidecar["dicom_seg_empty_labels"] == [label for label in masks if label not in written]
    segments = {int(k): v for k, v in sidecar["dicom_seg_segments"].items()}
    assert [segments[n]["label"] for n in sorted(segments)] == written  # numbered 1..n in label order

    source = read_dicom_series(seg_run.series)  # the slice order the bundle uses (by position, not file name)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in source.files]
    slice_of = {str(h.SOPInstanceUID): k for k, h in enumerate(headers)}
    position_of = {str(h.SOPInstanceUID): [float(v) for v in h.ImagePositionPatient] for h in headers}

    # pydicom: every frame, its segment, its source slice and its position, by hand
    ds = pydicom.dcmread(seg_file)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.SegmentationType == "BINARY"
    assert ds.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    assert ds.StudyInstanceUID == headers[0].StudyInstanceUID and ds.PatientID == "P001"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == headers[0].SeriesInstanceUID
    referenced = {str(i.ReferencedSOPInstanceUID) for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(slice_of)
    rebuilt = {label: np.zeros_like(masks[label]) for label in written}
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    for frame, group in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        uid = str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        np.testing.assert_allclose([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient],
                                   position_of[uid], atol=1e-4)
        rebuilt[segments[number]["label"]][:, :, slice_of[uid]] = frame.T  # (row, column) -> (column, row)
    for label in written:
        np.testing.assert_array_equal(rebuilt[label], masks[label])
    for item in ds.SegmentSequence:
        entry = segments[int(item.SegmentNumber)]
        assert item.SegmentLabel == entry["name"] and item.SegmentAlgorithmType == "AUTOMATIC"
        code = item.SegmentedPropertyTypeCodeSequence[0]
        assert f"{code.CodingSchemeDesignator}:{code.CodeValue}:{code.CodeMeaning}" == entry["type"]
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "Hermes universal segmentation"
        assert algorithm.AlgorithmVersion == json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]
        assert sidecar["weights"]["sha256"] in algorithm.AlgorithmParameters
    by_name = {item.SegmentLabel: item for item in ds.SegmentSequence}
    if "liver" in by_name:
        assert by_name["liver"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    if "left lung" in by_name:  # lung + the laterality modifier "left"
        lung = by_name["left lung"].SegmentedPropertyTypeCodeSequence[0]
        assert lung.CodeValue == "39607008" and lung.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"

    # highdicom: parses (and checks) the object, and gives the same masks per source instance
    seg = hd.seg.segread(seg_file)
    assert seg.get_segment_numbers() == sorted(segments)
    uids = [str(h.SOPInstanceUID) for h in headers]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=sorted(segments),
                                               assert_missing_frames_are_empty=True)
    for index, number in enumerate(sorted(segments)):
        np.testing.assert_array_equal(np.transpose(pixels[..., index], (2, 1, 0)), masks[segments[number]["label"]])


def test_dicom_seg_passes_dciodvfy(seg_run):
    """dicom3tools' IOD validator (Debian package dicom3tools) finds no error or warning in the SEG."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    checked = subprocess.run(["dciodvfy", "-new", str(seg_run.out / "ct_series_seg.dcm")], capture_output=True,
                             text=True, timeout=60)
    report = (checked.stdout + checked.stderr).strip().splitlines()
    assert report == ["Segmentation"], report


def test_outputs_are_never_replaced_unasked(seg_run, weights):  # noqa: F811
    before = {p.name: p.read_bytes() for p in seg_run.out.iterdir() if p.is_file() and not p.name.startswith(".")}
    status, text = run_in_process(input=str(seg_run.series), output_dir=str(seg_run.out), ckpt_path=str(weights["plain"]),
                             modality="ct", tasks="liver", output_format="dicom_seg", statistics=True)
    assert status == 1 and "already exists; pass --overwrite true to replace" in text
    after = {p.name: p.read_bytes() for p in seg_run.out.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == before
    # continuing the batch: the kept case's statistics join the new table, which never replaces the earlier one
    status, text = run_in_process(input=str(seg_run.series), output_dir=str(seg_run.out), ckpt_path=str(weights["plain"]),
                             modality="ct", tasks=TASKS, output_format="dicom_seg", statistics=True,
                             skip_existing=True)
    assert status == 0 and "Summary: 0 done, 1 already complete, 0 failed" in text, text[-3000:]
    assert (seg_run.out / "statistics.csv").read_bytes() == before["statistics.csv"]
    assert (seg_run.out / "statistics_1.csv").read_bytes() == before["statistics.csv"]
    (seg_run.out / "statistics_1.csv").unlink()


# --- statistics -----------------------------------------------------------------------------------------------
def test_statistics_against_values_computed_by_hand():
    """Two boxes of known size and values on a grid with spacing 0.8 x 1.2 x 2.5 mm and a rotated direction."""
    shape = (10, 12, 7)
    turn = np.radians(30.0)
    rotation = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.2, 2.5])
    affine[:3, 3] = [-20.0, 5.0, 40.0]
    labels = np.zeros(shape, np.uint8)
    values = np.full(shape, -1000.0, np.float32)
    labels[2:5, 3:7, 1:3] = 1  # 3 x 4 x 2 = 24 voxels holding 1..24
    values[2:5, 3:7, 1:3] = np.arange(1, 25, dtype=np.float32).reshape(3, 4, 2)
    labels[6:9, 1:2, 4:7] = 2  # 3 x 1 x 3 = 9 voxels, all 50 HU
    values[6:9, 1:2, 4:7] = 50.0
    stats = structure_statistics(labels, values, affine, {1: "box", 2: "bar", 3: "absent"}, "HU")
    voxel_ml = 0.8 * 1.2 * 2.5 / 1000.0
    box = stats["box"]
    assert box["voxels"] == 24 and box["volume_ml"] == pytest.approx(24 * voxel_ml)
    n = 24  # the values 1..n: mean (n+1)/2, population std sqrt((n^2-1)/12), linear percentiles 1 + q (n-1)
    assert box["mean"] == pytest.approx(12.5) and box["median"] == pytest.approx(12.5)
    assert box["std"] == pytest.approx(np.sqrt((n * n - 1) / 12.0))
    assert (box["min"], box["max"]) == (1.0, 24.0)
    assert box["p5"] == pytest.approx(1 + 0.05 * 23) and box["p95"] == pytest.approx(1 + 0.95 * 23)
    corners = np.array([[i, j, k, 1.0] for i in (2, 4) for j in (3, 6) for k in (1, 2)]) @ affine.T
    np.testing.assert_allclose(box["bbox_min_ras_mm"], corners[:, :3].min(0), atol=1e-9)
    np.testing.assert_allclose(box["bbox_max_ras_mm"], corners[:, :3].max(0), atol=1e-9)
    np.testing.assert_allclose(box["centre_of_mass_ras_mm"], (affine @ [3.0, 4.5, 1.5, 1.0])[:3], atol=1e-9)
    bar = stats["bar"]
    assert bar["voxels"] == 9 and bar["volume_ml"] == pytest.approx(9 * voxel_ml)
    assert (bar["mean"], bar["median"], bar["std"], bar["min"], bar["max"], bar["p5"], bar["p95"]) == (
        50.0, 50.0, 0.0, 50.0, 50.0, 50.0, 50.0)
    np.testing.assert_allclose(bar["centre_of_mass_ras_mm"], (affine @ [7.0, 1.0, 5.0, 1.0])[:3], atol=1e-9)
    assert stats["absent"]["voxels"] == 0 and stats["absent"]["mean"] is None
    assert stats["absent"]["bbox_min_ras_mm"] is None and box["intensity_unit"] == "HU"


def test_statistics_of_a_run_match_its_label_map_and_the_input_hu(seg_run):
    out = seg_run.out
    labels = np.asarray(nib.load(out / "ct_series_seg.nii.gz").dataobj)
    stats = json.loads((out / "ct_series_stats.json").read_text())
    assert stats["intensity_unit"] == "HU" and seg_run.sidecar["statistics"] == "ct_series_stats.json"
    voxel_ml = abs(np.linalg.det(seg_run.affine[:3, :3])) / 1000.0
    hu = seg_run.hu.astype(np.float64)  # the DICOM series stores these HU exactly
    for label, name in NAMES.items():
        entry = stats["structures"][name]
        inside = labels == label
        assert entry["label"] == label and entry["voxels"] == int(inside.sum())
        assert entry["volume_ml"] == pytest.approx(inside.sum() * voxel_ml)
        if inside.any():
            assert entry["mean"] == pytest.approx(hu[inside].mean()) and entry["max"] == hu[inside].max()
            centre = seg_run.affine @ [*np.argwhere(inside).mean(0), 1.0]
            np.testing.assert_allclose(entry["centre_of_mass_ras_mm"], centre[:3], atol=1e-4)
    with open(out / "statistics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case"], r["structure"]) for r in rows] == [("ct_series", name) for name in NAMES.values()]
    assert [int(r["voxels"]) for r in rows] == [stats["structures"][n]["voxels"] for n in NAMES.values()]
    assert "Statistics: " in seg_run.text


# --- NRRD -----------------------------------------------------------------------------------------------------
def test_nrrd_output_keeps_the_inputs_space_directions(ct, weights, tmp_path):  # noqa: F811
    hu, affine = ct
    oblique = tilted(affine, hu.shape)
    source = save_nrrd(tmp_path / "ct.nrrd", hu, oblique)
    out = tmp_path / "out"
    status, text = run_in_process(input=str(source), output_dir=str(out), ckpt_path=str(weights["plain"]),
                                  modality="ct", tasks="liver", output_format="nrrd", save_task_masks=True)
    assert status == 0, text[-3000:]
    given = nrrd.read_header(str(source))
    for name in ("ct_seg.nrrd", "ct_task-liver.nrrd"):
        array, header = nrrd.read(str(out / name))
        assert array.shape == hu.shape and header["space"] == given["space"]
        np.testing.assert_array_equal(header["space directions"], given["space directions"])
        np.testing.assert_array_equal(header["space origin"], given["space origin"])
    sidecar = json.loads((out / "ct_seg.json").read_text())
    assert sidecar["label_map"] == "ct_seg.nrrd" and sidecar["output_format"] == "nrrd"
    labels, _ = nrrd.read(str(out / "ct_seg.nrrd"))
    assert int((labels == 1).sum()) == sidecar["labels"]["1"]["voxels"]
    assert not list(out.glob("*.nii.gz"))


def test_nrrd_output_of_another_input_is_written_in_lps_on_its_grid(ct, tmp_path):
    from scripts.io.nrrd import write_nrrd

    hu, affine = ct
    oblique = tilted(affine, hu.shape)
    write_nrrd(tmp_path / "labels.nrrd", (hu > 0).astype(np.uint8), oblique)
    array, header = nrrd.read(str(tmp_path / "labels.nrrd"))
    assert header["space"] == "left-posterior-superior" and array.shape == hu.shape
    np.testing.assert_array_equal(array, (hu > 0).astype(np.uint8))
    np.testing.assert_allclose(nrrd_affine(tmp_path / "labels.nrrd"), oblique, atol=1e-9)


# --- bad cases ------------------------------------------------------------------------------------------------
def test_dicom_seg_bad_cases_get_one_line_and_keep_the_nifti_result(ct, weights, tmp_path):  # noqa: F811
    hu, affine = ct
    batch = tmp_path / "batch"
    batch.mkdir()
    save_nifti(batch / "plain.nii.gz", hu, affine)
    save_dicom_series(batch / "bare_series", hu, affine)  # no FrameOfReferenceUID, as some exports
    complete_series(save_dicom_series(batch / "good_series", hu, affine))
    table = json.loads((BUNDLE / "configs" / "segment_codes.json").read_text())
    del table["tasks"]["liver"]  # as a task of a user's own registry that the table does not know
    trimmed = tmp_path / "codes.json"
    trimmed.write_text(json.dumps(table))
    out = tmp_path / "out"
    common = {"ckpt_path": str(weights["plain"]), "modality": "ct", "tasks": "liver", "output_format": "dicom_seg"}
    status, text = run_in_process(input=str(batch), output_dir=str(out), segment_codes_file=str(trimmed),
                                  **common)
    assert status == 1 and "Summary: 0 done, 0 already complete, 3 failed" in text, text[-3000:]
    failed = [line for line in text.splitlines() if line.startswith("  failed: ")]
    assert len(failed) == 3 and "Traceback" not in text
    assert any("plain.nii.gz: no DICOM SEG written: the input is not a DICOM series" in line for line in failed)
    assert any("lacks FrameOfReferenceUID, which a DICOM SEG must reference" in line for line in failed)
    assert any(f"good_series: no DICOM SEG written: task 'liver' has no code in {trimmed}" in line for line in failed)
    for name in ("plain", "bare_series", "good_series"):
        assert (out / f"{name}_seg.nii.gz").is_file() and not (out / f"{name}_seg.dcm").exists()
        assert json.loads((out / f"{name}_seg.json").read_text())["dicom_seg_problem"]
    status, text = run_in_process(input=str(batch), output_dir=str(tmp_path / "out3"),
                                  **{**common, "output_format": "png"})
    assert status == 1 and "error: --output_format: expected one of nifti, nrrd, dicom_seg, got 'png'" in text


def test_an_anonymised_series_without_patient_and_study_details_still_gets_its_seg(ct, tmp_path):
    """Anonymisers often drop the patient/study attributes a SEG copies (type 2: present, possibly empty); they are
    copied as empty instead of failing the SEG."""
    from scripts.io.dicom_seg import EMPTY_IF_ABSENT, source_headers

    hu, affine = ct
    series = complete_series(save_dicom_series(tmp_path / "series", hu[:, :, :3], affine))
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        for key in EMPTY_IF_ABSENT:
            delattr(ds, key)
        ds.save_as(path, enforce_file_format=True)
    files = sorted(str(p) for p in series.iterdir())
    headers = source_headers(files)
    assert all(str(ds.get(key)) == "" for ds in headers for key in EMPTY_IF_ABSENT)


def test_code_table_covers_every_task_with_codes_from_the_dicom_dictionary():
    """Every task name of the registry has an entry; every specific code is the DICOM dictionary's own SNOMED CT
    concept (value and meaning), so no code in the table is made up."""
    from pydicom.sr.codedict import codes

    table = SegmentCodes.load(BUNDLE / "configs" / "segment_codes.json")
    registry = TaskRegistry.load(BUNDLE / "configs" / "task_registry.json")
    known = {}
    for keyword in dir(codes.SCT):
        code = getattr(codes.SCT, keyword, None)
        if not hasattr(code, "value") or not hasattr(code, "meaning"):
            continue
        known.setdefault(code.value, set()).add(code.meaning.lower())
    generic = []
    for task in registry.tasks:
        entry = table.get(task.name)
        assert entry is not None, task.name
        if entry.generic:
            generic.append(task.name)
        for code in (entry.category, entry.type, entry.laterality, entry.region):
            if code is not None:
                assert code.scheme_designator == "SCT" and code.meaning.lower() in known[code.value], code
    assert sorted(set(generic)) == ["portal and splenic vein", "prostate/uterus"]
