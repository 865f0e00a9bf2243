"""The inference workflow on real scans (sample suite CT and T1 MRI), as NIfTI, NRRD and DICOM series, LPS, RAS and
oblique: outputs sit exactly on the input's grid, the sidecar says what was done, bad inputs get one clear line.

Weights are a tiny random HermesResUNet (base_channels 4) and the window is 32^3 so every case is one window.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import json
import random
import subprocess
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from conftest import run_workflow, run_workflow_in_process
from scripts.errors import CaseError
from scripts.io.dicom import read_dicom_series
from scripts.networks.hermes import HermesResUNet

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
TINY = {"base_channels": 4, "roi_size": [32, 32, 32]}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --- real scans and ways to store them -----------------------------------------------------------------------
def crop(path: Path, start: tuple[int, int, int], size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A block of a real scan and the affine that keeps it where it was."""
    image = nib.load(path)
    block = tuple(slice(s, s + n) for s, n in zip(start, size))
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ np.asarray(start) + image.affine[:3, 3]
    return np.asarray(image.dataobj[block]), affine


def flipped_to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same scan stored with voxel axes toward R, A, S (flip the axes whose direction points the other way)."""
    flip = np.eye(4)
    for axis in range(3):
        if affine[axis, axis] < 0:
            flip[axis, axis], flip[axis, 3] = -1, array.shape[axis] - 1
            array = np.flip(array, axis)
    return np.ascontiguousarray(array), affine @ flip


def tilted(affine: np.ndarray, shape: tuple[int, ...], degrees=(15.0, 0.0, 25.0)) -> np.ndarray:
    """The affine rotated about the volume centre (x then z), giving an oblique grid."""
    ax, _, az = np.radians(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    centre = affine[:3, :3] @ ((np.asarray(shape) - 1) / 2) + affine[:3, 3]
    turn = np.eye(4)
    turn[:3, :3] = rz @ rx
    turn[:3, 3] = centre - rz @ rx @ centre
    return turn @ affine


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def save_nrrd(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    lps = LPS_TO_RAS @ affine
    nrrd.write(str(path), array, {"space": "left-posterior-superior", "space directions": lps[:3, :3].T,
                                  "space origin": lps[:3, 3], "kinds": ["domain"] * 3, "encoding": "gzip"})
    return path


def nrrd_affine(path: Path) -> np.ndarray:
    header = nrrd.read_header(str(path))
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(header["space directions"], dtype=float).T
    lps[:3, 3] = header["space origin"]
    return LPS_TO_RAS @ lps


def _ds(value: float) -> str:
    return f"{value:.10g}"


def save_dicom_series(folder: Path, hu: np.ndarray, affine: np.ndarray, modality: str = "CT",
                      prefix: str = "IM", shuffle: bool = True) -> Path:
    """One CT file per slice of ``hu`` (voxel order column, row, slice) placed by the RAS ``affine``."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ affine
    column_step, row_step = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    orientation = [*(lps[:3, 0] / column_step), *(lps[:3, 1] / row_step)]
    series_uid, study_uid = generate_uid(), generate_uid()
    order = list(range(hu.shape[2]))
    if shuffle:
        random.Random(0).shuffle(order)
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = modality, series_uid, study_uid
        ds.SeriesDescription = f"test series {series_uid[-6:]}"
        ds.InstanceNumber = hu.shape[2] - k  # reversed on purpose: slices must be ordered by position
        ds.ImagePositionPatient = [_ds(v) for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.PixelSpacing = [_ds(row_step), _ds(column_step)]
        ds.SliceThickness = _ds(float(np.linalg.norm(lps[:3, 2])))
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.ascontiguousarray((hu[:, :, k].T + 1024).astype(np.uint16)).tobytes()
        ds.save_as(folder / f"{prefix}{k:04d}.dcm", enforce_file_format=True)
    return folder


# --- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scans(sample_suite) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real CT (lung1) and real contrast T1 MRI (brain1) blocks: 1 window of 32^3 after resampling to 1.5 mm."""
    root = Path(sample_suite["root"])
    return {
        "ct": crop(root / "sample_lung_ct" / "lung1_image.nii.gz", (232, 232, 20), (48, 48, 8)),
        "mri": crop(root / "sample_brain_t1" / "brain1_image.nii.gz", (100, 100, 10), (56, 56, 6)),
    }


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Tiny random weights as plain state dicts; ``t1_head`` has its modality head pushed to answer T1."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    net = HermesResUNet(base_channels=4, num_tasks=72)
    torch.save(net.state_dict(), folder / "tiny.pt")
    last = [m for m in net.modality_head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias[2] += 100.0
    torch.save(net.state_dict(), folder / "tiny_t1_head.pt")
    return {"plain": folder / "tiny.pt", "t1_head": folder / "tiny_t1_head.pt"}


def run_in_process(**overrides) -> tuple[int, str]:
    """The inference workflow in this interpreter (the shared runner), tiny: (exit status, everything printed)."""
    done = run_workflow_in_process("inference", **{**TINY, **overrides})
    return done.returncode, done.stdout + done.stderr


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The inference workflow as a user's process, tiny."""
    return run_workflow("inference", "--base_channels", "4", "--roi_size", "[32,32,32]", *args)


def assert_same_grid(output: Path, shape: tuple[int, ...], affine: np.ndarray) -> nib.Nifti1Image:
    image = nib.load(output)
    assert image.shape == tuple(shape)
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    assert nib.aff2axcodes(image.affine) == nib.aff2axcodes(affine)
    return image


# --- tests ---------------------------------------------------------------------------------------------------
def test_dicom_reader_reproduces_the_series_geometry(scans, tmp_path):
    hu, affine = scans["ct"]
    oblique = tilted(affine, hu.shape)
    series = read_dicom_series(save_dicom_series(tmp_path / "series", hu, oblique))
    assert series.modality == "CT" and series.array.shape == hu.shape
    np.testing.assert_array_equal(series.array, hu.astype(np.float32))  # rescaled back to HU, slices in order
    np.testing.assert_allclose(series.affine, oblique, atol=1e-5)
    save_dicom_series(tmp_path / "series", hu[:, :, :3], affine, prefix="B")  # a second series in the same folder
    with pytest.raises(CaseError, match=r"holds 2 DICOM series, expected one: ") as several:
        read_dicom_series(tmp_path / "series")
    assert "(8 files, test series" in str(several.value) and "(3 files, test series" in str(several.value)
    gap = tmp_path / "gap"
    save_dicom_series(gap, hu, affine, shuffle=False)
    (gap / "IM0004.dcm").unlink()
    with pytest.raises(CaseError, match=r"not evenly spaced \(steps 5-10 mm\)"):
        read_dicom_series(gap)


def test_ct_in_four_storages_lands_on_each_input_grid_with_one_answer(scans, weights, tmp_path):
    hu, lps_affine = scans["ct"]
    batch = tmp_path / "batch"
    batch.mkdir()
    save_nifti(batch / "ct_lps.nii.gz", hu, lps_affine)
    ras_array, ras_affine = flipped_to_ras(hu, lps_affine)
    save_nifti(batch / "ct_ras.nii.gz", ras_array, ras_affine)
    save_nrrd(batch / "ct_nrrd.nrrd", hu, lps_affine)
    save_dicom_series(batch / "ct_dicom", hu, lps_affine)
    out = tmp_path / "out"
    status, text = run_in_process(input=str(batch), output_dir=str(out), ckpt_path=str(weights["plain"]),
                                  modality="ct", tasks="liver,amos_ct/spleen,left lung", save_probabilities=True)
    assert status == 0, text
    assert "Summary: 4 done, 0 already complete, 0 failed" in text
    # liver: LiTS, AMOS CT, BTCV; spleen: AMOS CT; left lung: StructSeg thoracic -> each dataset's full list, once
    assert "3 label(s) from 5 task(s) in 4 pass(es) per window" in text
    expected = {"ct_lps": (hu.shape, lps_affine), "ct_ras": (ras_array.shape, ras_affine),
                "ct_nrrd": (hu.shape, nrrd_affine(batch / "ct_nrrd.nrrd")), "ct_dicom": (hu.shape, lps_affine)}
    probabilities = {}
    for name, (shape, affine) in expected.items():
        label_map = assert_same_grid(out / f"{name}_seg.nii.gz", shape, affine)
        assert label_map.get_data_dtype() == np.uint8
        stack = np.stack([np.asarray(assert_same_grid(out / f"{name}_prob-{slug}.nii.gz", shape, affine).dataobj)
                          for slug in ("liver", "amos_ct-spleen", "left-lung")])
        expected_labels = np.where(stack.max(0) > 0.5, stack.argmax(0) + 1, 0)
        np.testing.assert_array_equal(np.asarray(label_map.dataobj), expected_labels)
        probabilities[name] = stack
    # the same scan stored four ways is the same network input, so the answers agree voxel by voxel
    np.testing.assert_allclose(probabilities["ct_ras"], probabilities["ct_lps"][:, ::-1, ::-1], atol=1e-4)
    np.testing.assert_allclose(probabilities["ct_nrrd"], probabilities["ct_lps"], atol=1e-4)
    np.testing.assert_allclose(probabilities["ct_dicom"], probabilities["ct_lps"], atol=1e-3)
    assert 0.0 < probabilities["ct_lps"].min() and probabilities["ct_lps"].max() < 1.0
    sidecar = json.loads((out / "ct_lps_seg.json").read_text())
    assert sidecar["labels"]["1"]["task_ids"] == [0, 9, 24] and sidecar["labels"]["1"]["name"] == "liver"
    assert sidecar["labels"]["2"]["tasks"] == ["amos_ct/spleen"] and sidecar["labels"]["3"]["task_ids"] == [32]
    counts = np.bincount(np.asarray(nib.load(out / "ct_lps_seg.nii.gz").dataobj).ravel(), minlength=4)
    assert [sidecar["labels"][str(k)]["voxels"] for k in (1, 2, 3)] == counts[1:].tolist()
    assert sidecar["modality"] == {"name": "ct", "index": 0, "source": "--modality"}
    assert sidecar["weights"] == {"path": str(weights["plain"].resolve()), "kind": "weights",
                                  "sha256": hashlib.sha256(weights["plain"].read_bytes()).hexdigest()}
    assert sidecar["input"] == str((batch / "ct_lps.nii.gz").resolve()) and sidecar["input_format"] == "nifti"
    assert json.loads((out / "ct_dicom_seg.json").read_text())["input_format"] == "dicom"


def test_oblique_mri_as_nifti_and_nrrd_with_modality_from_the_head(scans, weights, tmp_path):
    array, affine = scans["mri"]
    oblique = tilted(affine, array.shape)
    batch = tmp_path / "mri"
    batch.mkdir()
    save_nifti(batch / "t1_oblique.nii.gz", array, oblique)
    oblique = nib.load(batch / "t1_oblique.nii.gz").affine  # NIfTI keeps float32: give the NRRD the very same grid
    save_nrrd(batch / "t1_oblique_nrrd.nrrd", array, oblique)
    ras_array, ras_affine = flipped_to_ras(array, affine)
    save_nifti(batch / "t1_ras.nii.gz", ras_array, ras_affine)
    out = tmp_path / "out"
    status, text = run_in_process(input=str(batch), output_dir=str(out), ckpt_path=str(weights["t1_head"]),
                                  save_task_masks=True, save_overlay=True)
    assert status == 0, text
    assert "modality t1 (network modality head), 7 label(s) from 7 task(s) in 2 pass(es) per window" in text
    maps = {}
    for name in ("t1_oblique", "t1_oblique_nrrd"):
        label_map = np.asarray(assert_same_grid(out / f"{name}_seg.nii.gz", array.shape, oblique).dataobj)
        sidecar = json.loads((out / f"{name}_seg.json").read_text())
        assert sidecar["modality"] == {"name": "t1", "index": 2, "source": "network modality head"}
        names = [sidecar["labels"][str(k)]["name"] for k in range(1, 8)]
        assert names == ["liver", "right kidney", "left kidney", "spleen", "gray matter", "white matter",
                         "cerebrospinal fluid"]
        masks = np.stack([np.asarray(nib.load(out / sidecar["task_masks"][str(k)]).dataobj) for k in range(1, 8)])
        assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
        labelled = label_map > 0
        assert np.array_equal(labelled, masks.any(0))  # a label exactly where some task is above 0.5
        picked = np.take_along_axis(masks, (label_map[None].astype(np.int64) - 1).clip(0), 0)[0]
        assert picked[labelled].all()  # and the chosen label's own mask is on there
        assert (out / f"{name}_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        maps[name] = label_map
    assert np.array_equal(maps["t1_oblique"], maps["t1_oblique_nrrd"])
    assert nib.aff2axcodes(affine) != ("R", "A", "S") and nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    assert_same_grid(out / "t1_ras_seg.nii.gz", ras_array.shape, ras_affine)
    header = nib.load(out / "t1_oblique_seg.nii.gz").header
    assert header.get_sform(coded=True)[1] == nib.load(batch / "t1_oblique.nii.gz").header.get_sform(coded=True)[1]


def test_cli_segments_an_oblique_dicom_series_with_modality_from_its_tag(scans, weights, tmp_path):
    hu, affine = scans["ct"]
    oblique = tilted(affine, hu.shape, degrees=(0.0, 10.0, -20.0))
    series = save_dicom_series(tmp_path / "patient_ct", hu, oblique)
    result = run_cli("--input", str(series), "--output_dir", str(tmp_path / "out"), "--ckpt_path",
                     str(weights["plain"]), "--tasks", "liver,spleen")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "modality ct (DICOM Modality tag CT), 2 label(s) from 5 task(s) in 3 pass(es) per window" in result.stdout
    assert "[1/1] done" in result.stdout and "Summary: 1 done, 0 already complete, 0 failed" in result.stdout
    assert_same_grid(tmp_path / "out" / "patient_ct_seg.nii.gz", hu.shape, oblique)
    sidecar = json.loads((tmp_path / "out" / "patient_ct_seg.json").read_text())
    assert sidecar["modality"]["source"] == "DICOM Modality tag CT" and sidecar["labels"]["2"]["task_ids"] == [4, 19]


def test_cli_batch_reports_each_bad_input_in_one_line_and_finishes_the_good_one(scans, weights, tmp_path):
    hu, affine = scans["ct"]
    batch = tmp_path / "batch"
    batch.mkdir()
    save_nifti(batch / "good.nii.gz", hu, affine)
    (batch / "corrupt.nii.gz").write_bytes(gzip.compress((batch / "good.nii.gz").read_bytes())[:3000])
    save_nifti(batch / "flat.nii.gz", hu[:, :, 0], affine)
    save_nifti(batch / "multi.nii.gz", np.stack([hu, hu], axis=-1), affine)
    holes = hu.astype(np.float32)
    holes[3, 4, 5], holes[6, 7, 1] = np.nan, np.inf
    save_nifti(batch / "holes.nii.gz", holes, affine)
    save_dicom_series(batch / "two_series", hu[:, :, :4], affine)
    save_dicom_series(batch / "two_series", hu[:, :, 4:], affine, prefix="B")
    (batch / "readme.txt").write_text("ignored: not an image")
    result = run_cli("--input", str(batch), "--output_dir", str(tmp_path / "out"), "--ckpt_path",
                     str(weights["plain"]), "--modality", "ct", "--tasks", "liver")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    expected = {
        "corrupt.nii.gz": "cannot read or preprocess the image",
        "flat.nii.gz": "image is 2D (shape (48, 48))",
        "multi.nii.gz": "image is 4D or multi-channel (shape (48, 48, 8, 2))",
        "holes.nii.gz": "image has 2 NaN or infinite voxels",
        "two_series": "the folder holds 2 DICOM series, expected one",
    }
    for name, message in expected.items():
        failed = [line for line in lines if "FAILED" in line and name in line]
        assert len(failed) == 1 and message in failed[0], (name, result.stdout)
    assert "Summary: 1 done, 0 already complete, 5 failed" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    visible = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert visible == ["good_seg.json", "good_seg.nii.gz"]


def test_cli_without_weights_says_how_to_get_them(tmp_path):
    result = run_cli("--input", str(tmp_path), "--ckpt_path", str(tmp_path / "missing.pt"))
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no model weights at" in errors[0] and "monai.bundle run training" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_setup_errors_and_overwrite_protection(scans, weights, tmp_path):
    hu, affine = scans["ct"]
    case = save_nifti(tmp_path / "case.nii.gz", hu, affine)
    common = {"input": str(case), "output_dir": str(tmp_path / "out"), "ckpt_path": str(weights["plain"])}
    status, text = run_in_process(**common, tasks="liver,kidny")
    assert status == 1 and "error: --tasks: unknown task 'kidny'; did you mean: kidney" in text
    status, text = run_in_process(**common, modality="xray")
    assert status == 1 and "error: --modality: unknown modality 'xray'" in text
    status, text = run_in_process(**common, save_overlay="maybe")
    assert status == 1 and "error: --save_overlay: expected true or false, got 'maybe'" in text
    status, text = run_in_process(**{**common, "input": str(tmp_path / "nowhere.nii.gz")})
    assert status == 1 and f"{tmp_path / 'nowhere.nii.gz'}: no such file or folder" in text
    status, text = run_in_process(**common, modality="t2", tasks="kidney tumor")
    assert status == 1 and "'kidney tumor' has no task for modality 't2'; candidates: kits/kidney tumor" in text
    status, text = run_in_process(**common, modality="ct", tasks="kidney tumor")
    assert status == 0 and "Summary: 1 done" in text
    before = (tmp_path / "out" / "case_seg.nii.gz").read_bytes()
    status, text = run_in_process(**common, modality="ct", tasks="liver")
    assert status == 1 and "case_seg.json and 1 more already exists; pass --overwrite true to replace" in text
    assert (tmp_path / "out" / "case_seg.nii.gz").read_bytes() == before
    status, text = run_in_process(**common, modality="ct", tasks="liver", overwrite=True)
    assert status == 0 and json.loads((tmp_path / "out" / "case_seg.json").read_text())["labels"]["1"]["name"] == "liver"


def test_pattern_like_case_names_own_only_their_own_outputs(scans, weights, tmp_path):
    """Output names are literal: ``a*`` is not a pattern for ``a`` and ``ab``, ``b[1]`` not one for ``b1``."""
    hu, affine = scans["ct"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = ["a", "ab", "a*", "b1", "b[1]"]
    for name in names:
        save_nifti(inputs / f"{name}.nii.gz", hu, affine)
    out = tmp_path / "out"
    common = {"output_dir": str(out), "ckpt_path": str(weights["plain"]), "modality": "ct", "tasks": "liver",
              "save_task_masks": True}
    status, text = run_in_process(input=str(inputs), **common)
    assert status == 0 and "Summary: 5 done, 0 already complete, 0 failed" in text, text[-2000:]
    expected = sorted(f"{n}{suffix}" for n in names for suffix in ("_seg.json", "_seg.nii.gz", "_task-liver.nii.gz"))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == expected
    others = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir() if not p.name.startswith(("a*", "."))}
    status, text = run_in_process(input=str(inputs / "a*.nii.gz"), overwrite=True, **common)
    assert status == 0 and "Summary: 1 done" in text, text[-2000:]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in others} == others  # untouched, none deleted
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == expected


def test_a_run_that_fails_after_claiming_the_folder_lets_go_of_it(scans, weights, tmp_path):
    """The weights are loaded after the output folder is locked: a run stopped there must not keep the lock (a later
    run in the same process, as in a notebook, would otherwise be told the folder is in use)."""
    hu, affine = scans["ct"]
    common = {"input": str(save_nifti(tmp_path / "case.nii.gz", hu, affine)), "output_dir": str(tmp_path / "out"),
              "modality": "ct", "tasks": "liver"}
    gc.disable()  # the failed run's objects stay alive, as they may in any process (tracebacks, cycles)
    try:
        status, text = run_in_process(**common, ckpt_path=str(tmp_path / "absent.pt"))
        assert status == 1 and "absent.pt" in text and (tmp_path / "out" / ".hermes.lock").exists()
        status, text = run_in_process(**common, ckpt_path=str(weights["plain"]))
    finally:
        gc.enable()
    assert status == 0 and "Summary: 1 done" in text, text[-2000:]


def test_datalist_item_names_its_modality(scans, weights, tmp_path):
    hu, affine = scans["ct"]
    save_nifti(tmp_path / "scan.nii.gz", hu, affine)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"testing": [{"image": "scan.nii.gz", "dataset": "chaos", "modality": "t2"},
                                                {"image": "absent.nii.gz"}]}))
    status, text = run_in_process(input=str(datalist), output_dir=str(tmp_path / "out"),
                                  ckpt_path=str(weights["plain"]), tasks="spleen")
    assert status == 1 and "Summary: 1 done, 0 already complete, 1 failed" in text
    assert f"{tmp_path / 'absent.nii.gz'}: no such file or folder" in text
    sidecar = json.loads((tmp_path / "out" / "scan_seg.json").read_text())
    assert sidecar["modality"] == {"name": "t2", "index": 3, "source": "datalist"}
    assert sidecar["labels"]["1"]["tasks"] == ["chaos/spleen"]
