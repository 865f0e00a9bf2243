"""``python -m scripts.prepare`` on miniature copies of the eleven official downloads, each in its own layout.

Every miniature has a few tiny cases with the dataset's kind of geometry (LPS-stored axial CT, KiTS's slice-first
volumes, oblique cardiac short axes, a rotated series), one non-identity direction per dataset at least, and CHAOS
as DICOM series whose file names are not in slice order. The checks map every prepared voxel back through world
coordinates onto the source, so a header rewrite, a flipped label or a PNG on the wrong slice cannot pass. Then one
short ``train_published.json`` run trains on all eleven prepared datasets together.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import BUNDLE_ROOT, run_workflow_in_process
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scripts.data.datalist import read_datalist
from scripts.prepare.__main__ import main as prepare_main
from scripts.prepare.splits import official_sections
from scripts.registry import TaskRegistry

REGISTRY_FILE = BUNDLE_ROOT / "configs" / "task_registry.json"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SECTION_OF = {"train": "training", "val": "validation", "test": "testing"}


# --------------------------------------------------------------------------------------------- geometry
def axial(spacing, origin=(-20.0, 30.0, -50.0)) -> np.ndarray:
    """Axial slices stored as most converters store CT: x to the left, y to the back (LPS-like), z up."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = origin
    return affine


def slice_first(spacing, origin=(10.0, -5.0, 40.0)) -> np.ndarray:
    """KiTS19's storage: the first voxel axis runs along the slices (downwards), the others in-plane."""
    affine = np.zeros((4, 4))
    affine[2, 0], affine[1, 1], affine[0, 2] = -spacing[2], -spacing[1], -spacing[0]
    affine[:3, 3], affine[3, 3] = origin, 1.0
    return affine


def oblique(spacing, degrees=20.0, origin=(5.0, 5.0, 5.0)) -> np.ndarray:
    """Axial slices rotated about two axes (a cardiac short axis, a tilted series)."""
    a, b = np.radians(degrees), np.radians(degrees / 2)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def image_and_label(shape, values, seed) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like int16 image and a label holding every value of ``values`` in blocks of the central box."""
    rng = np.random.default_rng(seed)
    image = (rng.normal(40, 30, shape) + np.arange(shape[0])[:, None, None] * 7).astype(np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    inner = label[1:-1, 1:-1, 1:-1]
    flat = inner.reshape(-1)
    block = max(1, flat.size // (2 * len(values)))
    for k, value in enumerate(values):
        flat[k * block : (k + 1) * block] = value
    label[1:-1, 1:-1, 1:-1] = flat.reshape(inner.shape)
    return image, label


def save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


class Truth:
    """What each prepared case must hold: its source voxels, label values of the registry, geometry, section."""

    def __init__(self) -> None:
        self.cases: dict[str, dict] = {}

    def add(self, case_id, dataset, official, image, label, affine, modality=None) -> None:
        self.cases[case_id] = {
            "dataset": dataset,
            "official": str(official),
            "image": image,
            "label": label,
            "affine": affine,
            "modality": modality,
        }


# ------------------------------------------------------------------------------------ official layouts
def nifti_pairs(truth, dataset, cases, image_path, label_path, values, shape, mapped=None):
    """Datasets shipped as one image and one label NIfTI file per case."""
    for n, (official, case_id, affine) in enumerate(cases):
        image, label = image_and_label(shape, values, seed=n + 10 * len(dataset))
        save(image_path(official), image, affine)
        save(label_path(official), label, affine)
        truth.add(case_id, dataset, official, image, mapped(label) if mapped else label, affine)


def build_lits(root: Path, truth: Truth) -> None:
    cases = [
        (6, "lits_0006", axial((0.7, 0.7, 2.5))),
        (28, "lits_0028", axial((0.6, 0.6, 0.7))),
        (0, "lits_0000", slice_first((0.8, 0.8, 2.0))),
        (1, "lits_0001", axial((0.7, 0.7, 2.5))),
    ]
    batch = {6: "Training Batch 1", 0: "Training Batch 1", 1: "Training Batch 1", 28: "Training Batch 2"}
    nifti_pairs(
        truth,
        "lits",
        cases,
        lambda n: root / batch[n] / f"volume-{n}.nii",
        lambda n: root / batch[n] / f"segmentation-{n}.nii",
        [1, 2],
        (14, 12, 6),
    )
    # the published header fix: volume 28's spacing is [1, 1, 1.7] (directions and origin kept)
    fixed = truth.cases["lits_0028"]["affine"].copy()
    fixed[:3, :3] = fixed[:3, :3] / np.linalg.norm(fixed[:3, :3], axis=0) * np.array([1.0, 1.0, 1.7])
    truth.cases["lits_0028"]["affine"] = fixed


def build_kits(root: Path, truth: Truth) -> None:
    cases = [(0, "kits_0000", slice_first((0.78, 0.78, 3.0))), (1, "kits_0001", slice_first((0.9, 0.9, 2.5)))]
    nifti_pairs(
        truth,
        "kits",
        cases,
        lambda n: root / "data" / f"case_{n:05d}" / "imaging.nii.gz",
        lambda n: root / "data" / f"case_{n:05d}" / "segmentation.nii.gz",
        [1, 2],
        (6, 12, 14),
    )
    save(root / "data" / "case_00210" / "imaging.nii.gz", np.zeros((4, 8, 8), np.int16), slice_first((1, 1, 3)))


def build_amos(root: Path, truth: Truth) -> None:
    base = root / "amos22"
    for dataset, cases, values in (
        ("amos_ct", [(70, "Tr", axial((0.7, 0.7, 5.0))), (212, "Va", oblique((0.8, 0.8, 3.0)))], list(range(1, 16))),
        (
            "amos_mr",
            [(553, "Tr", oblique((1.2, 1.2, 4.0), 10)), (518, "Va", axial((1.0, 1.0, 3.0)))],
            list(range(1, 16)),
        ),
    ):
        for official, part, affine in cases:
            image, label = image_and_label((16, 14, 6), values, seed=official)
            save(base / f"images{part}" / f"amos_{official:04d}.nii.gz", image, affine)
            save(base / f"labels{part}" / f"amos_{official:04d}.nii.gz", label, affine)
            expected = label.copy()
            if dataset == "amos_mr":  # CT-only classes of the MRI files are background (registry)
                expected[expected >= 14] = 0
            truth.add(f"{dataset}_{official:04d}", dataset, official, image, expected, affine)
    save(base / "imagesTs" / "amos_0600.nii.gz", np.zeros((8, 8, 4), np.int16), axial((1, 1, 1)))


def build_bcv(root: Path, truth: Truth) -> None:
    cases = [("img0030", "bcv_img0030", axial((0.75, 0.75, 3.0))), ("img0032", "bcv_img0032", oblique((0.7, 0.7, 2.5)))]
    training = root / "RawData" / "Training"
    nifti_pairs(
        truth,
        "bcv",
        cases,
        lambda n: training / "img" / f"{n}.nii.gz",
        lambda n: training / "label" / f"{n.replace('img', 'label')}.nii.gz",
        list(range(1, 14)),
        (16, 14, 6),
    )


def build_structseg(root: Path, truth: Truth) -> None:
    for dataset, folder, cases, values in (
        ("structseg_oar", "Thoracic_OAR", [(5, axial((0.98, 0.98, 3.0))), (3, slice_first((1.0, 1.0, 3.0)))], 6),
        ("structseg_head_oar", "HaN_OAR", [(9, axial((1.0, 1.0, 3.0))), (25, oblique((1.0, 1.0, 3.0)))], 22),
    ):
        named = [(n, f"{dataset}_{n:04d}", affine) for n, affine in cases]
        nifti_pairs(
            truth,
            dataset,
            named,
            lambda n, f=folder: root / "StructSeg" / f / str(n) / "data.nii.gz",
            lambda n, f=folder: root / "StructSeg" / f / str(n) / "label.nii.gz",
            list(range(1, values + 1)),
            (16, 14, 8),
        )


def save_mr_series(folder: Path, pixels: np.ndarray, affine: np.ndarray, names: list[str]) -> None:
    """One MR file per slice of ``pixels`` (column, row, slice); slice k is saved as ``names[k]``."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ affine
    column_step, row_step = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    orientation = [*(lps[:3, 0] / column_step), *(lps[:3, 1] / row_step)]
    series_uid = generate_uid()
    for k, name in enumerate(names):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID = "MR", series_uid
        ds.InstanceNumber = int(name.rsplit("-", 1)[-1])
        ds.ImagePositionPatient = [f"{v:.10g}" for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in orientation]
        ds.PixelSpacing = [f"{row_step:.10g}", f"{column_step:.10g}"]
        ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T.astype(np.uint16)).tobytes()
        ds.save_as(folder / f"{name}.dcm", enforce_file_format=True)


def build_chaos(root: Path, truth: Truth) -> None:
    grey = {1: 63, 2: 126, 3: 189, 4: 252}  # liver, right kidney, left kidney, spleen as the PNGs store them
    for patient, t1_affine, t2_affine in (
        ("20", oblique((1.4, 1.4, 5.5), 12), axial((1.5, 1.5, 6.0))),
        ("22", axial((1.6, 1.6, 5.0)), oblique((1.5, 1.5, 6.0), -8)),
    ):
        base = root / "CHAOS_Train_Sets" / "Train_Sets" / "MR" / patient
        slices = 5
        rank = list(range(slices))
        random.Random(int(patient)).shuffle(rank)  # file-name order is not slice order
        _, label = image_and_label((12, 10, slices), [1, 2, 3], seed=int(patient))
        label[..., 0] = 0
        label[2:5, 2:5, 0] = 4  # only the first slice (by position) has spleen at this corner
        for sequence, folder, ground, numbers, affine in (
            ("t1_in", "T1DUAL/DICOM_anon/InPhase", "T1DUAL/Ground", [2 * r + 2 for r in rank], t1_affine),
            ("t1_out", "T1DUAL/DICOM_anon/OutPhase", None, [2 * r + 1 for r in rank], t1_affine),
            ("t2", "T2SPIR/DICOM_anon", "T2SPIR/Ground", [r + 1 for r in rank], t2_affine),
        ):
            pixels = np.random.default_rng(len(sequence)).integers(0, 900, (12, 10, slices)).astype(np.uint16)
            names = [f"IMG-0004-{n:05d}" for n in numbers]
            save_mr_series(base / folder, pixels, affine, names)
            if ground is not None:
                (base / ground).mkdir(parents=True, exist_ok=True)
                for k, name in enumerate(names):
                    png = np.vectorize(lambda v: grey.get(int(v), 0))(label[:, :, k]).T.astype(np.uint8)
                    Image.fromarray(png).save(base / ground / f"{name}.png")
            truth.add(f"chaos_{patient}_{sequence}", "chaos", patient, pixels, label, affine, modality=sequence)


def build_mnm(root: Path, truth: Truth) -> None:
    for patient, folder, frames, affine in (
        ("A4B5U4", "Training/Labeled", (1, 3), oblique((1.3, 1.3, 9.0), 35)),
        ("G2J1M5", "Validation", (0, 4), oblique((1.2, 1.2, 10.0), -25)),
    ):
        rng = np.random.default_rng(len(patient) + frames[0])
        cine = rng.integers(0, 500, (12, 12, 4, 6)).astype(np.int16)
        gt = np.zeros(cine.shape, dtype=np.uint8)
        for part, frame in enumerate(frames):
            _, gt[..., frame] = image_and_label((12, 12, 4), [1, 2, 3], seed=part)
            truth.add(f"mnm_{patient}_{part}", "mnm", patient, cine[..., frame], gt[..., frame], affine)
        save(root / "OpenDataset" / folder / patient / f"{patient}_sa.nii.gz", cine, affine)
        save(root / "OpenDataset" / folder / patient / f"{patient}_sa_gt.nii.gz", gt, affine)


def build_brain(root: Path, truth: Truth) -> None:
    for official, phase, affine in (
        ("dlbs_0028401", "train", axial((1.0, 1.2, 1.2))),
        ("dlbs_0028394", "valid", slice_first((1.0, 1.0, 1.3))),
    ):
        image, label = image_and_label((12, 12, 10), [1, 2, 3], seed=len(phase))
        maps = [np.where(label == k, 0.9, 0.05).astype(np.float32) for k in (1, 2, 3)]
        maps = [np.where(label == 0, 0.0, m) for m in maps]
        maps[0][0, :, :] = 0.2  # faint grey-matter probability at the edge: background (the published rule said GM)
        save(root / "brain_structure" / phase / "image" / f"{official}_img.nii", image, affine)
        for name, m in zip(("graymatter", "whitematter", "csf"), maps):
            save(root / "brain_structure" / phase / "mask" / f"{official}_probmask_{name}.nii", m, affine)
        truth.add(f"brain_structure_{official}", "brain_structure", official, image, label, affine)


def build_autopet(root: Path, truth: Truth) -> None:
    base = root / "FDG-PET-CT-Lesions"
    studies = [
        ("PETCT_0410759456", "11-10-2001-NA-PET-CT Ganzkoerper  primaer mit KM-10445", 0),  # listed second
        ("PETCT_0410759456", "03-05-2002-NA-PET-CT Ganzkoerper  primaer mit KM-21012", 1),
        ("PETCT_8aa48809ea", "06-14-2004-NA-PET-CT Ganzkoerper  primaer mit KM-55501", 0),
    ]
    for n, (patient, study, index) in enumerate(studies):
        affine = axial((4.07, 4.07, 3.0)) if n != 1 else oblique((4.07, 4.07, 3.0), 5)
        image, label = image_and_label((12, 12, 10), [1], seed=100 + n)
        suv = (image.astype(np.float32) / 40.0 + index).astype(np.float32)
        save(base / patient / study / "SUV.nii.gz", suv, affine)
        save(base / patient / study / "SEG.nii.gz", label, affine)
        save(base / patient / study / "CTres.nii.gz", image, affine)
        truth.add(f"autopet_{patient}_{index}", "autopet", f"{patient}_{index}", suv, label, affine)


BUILDERS = {
    "lits": (build_lits, ["lits"]),
    "kits": (build_kits, ["kits"]),
    "amos": (build_amos, ["amos_ct", "amos_mr"]),
    "bcv": (build_bcv, ["bcv"]),
    "structseg": (build_structseg, ["structseg_oar", "structseg_head_oar"]),
    "chaos": (build_chaos, ["chaos"]),
    "mnm": (build_mnm, ["mnm"]),
    "brain": (build_brain, ["brain_structure"]),
    "autopet": (build_autopet, ["autopet"]),
}


def prepare(*args: str) -> int:
    return prepare_main([str(a) for a in args])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "scripts.prepare", *map(str, args)],
        cwd=BUNDLE_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def failed_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("FAILED ")]


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def registry() -> TaskRegistry:
    return TaskRegistry.load(REGISTRY_FILE)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """The miniatures of all eleven datasets, each prepared by its own command into one output folder."""
    raw, out = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("prepared")
    truth = Truth()
    for folder, (build, datasets) in BUILDERS.items():
        build(raw / folder, truth)
        for dataset in datasets:
            assert prepare(dataset, "--src", raw / folder, "--dst", out, "--allow_missing") == 0, dataset
    return {"raw": raw, "out": out, "truth": truth}


# ------------------------------------------------------------------------------------------ the checks
def world_equal(prepared_file: Path, source: np.ndarray, source_affine: np.ndarray) -> nib.Nifti1Image:
    """Every voxel of the prepared file sits on a source voxel at the same world position and holds its value."""
    image = nib.load(str(prepared_file))
    data = np.asanyarray(image.dataobj)
    assert data.size == source.size, prepared_file
    grid = np.indices(data.shape).reshape(3, -1)
    world = image.affine @ np.vstack([grid, np.ones(grid.shape[1])])
    index = np.linalg.inv(source_affine) @ world
    rounded = np.round(index[:3]).astype(int)
    assert np.abs(index[:3] - rounded).max() < 1e-3, f"{prepared_file}: not on the source grid (resampled?)"
    np.testing.assert_array_equal(data.reshape(-1), source[tuple(rounded)], err_msg=str(prepared_file))
    return image


def test_every_dataset_prepares_with_its_geometry_labels_and_ids(prepared: dict, registry: TaskRegistry) -> None:
    out, truth = prepared["out"], prepared["truth"]
    for case_id, expected in truth.cases.items():
        folder = out / expected["dataset"] / case_id
        image = world_equal(folder / f"{case_id}.nii.gz", expected["image"], expected["affine"])
        label = world_equal(folder / f"{case_id}_label.nii.gz", expected["label"], expected["affine"])
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S") and np.allclose(image.affine, label.affine)
        assert label.get_data_dtype() == np.uint8
        values = set(np.unique(np.asanyarray(label.dataobj)).tolist())
        assert values <= {0, *registry.label_values(expected["dataset"])}, (case_id, values)
    # exactly the expected case folders, and nothing half-written or staged
    made = sorted(p.name for p in out.glob("*/*") if p.is_dir() and not p.name.startswith("."))
    assert made == sorted(truth.cases)
    assert not list(out.rglob(".staging/*")) and not list(out.rglob(".*.tmp*"))
    assert not (out / "kits" / "kits_0210").exists() and not (out / "amos_ct" / "amos_ct_0600").exists()


def test_chaos_labels_follow_the_slice_positions_not_the_file_names(prepared: dict) -> None:
    """Spleen was drawn on the lowest slice only; its PNG's file name is anywhere in the listing."""
    for case_id in ("chaos_20_t1_in", "chaos_20_t1_out", "chaos_22_t2"):
        expected = prepared["truth"].cases[case_id]
        label = nib.load(str(prepared["out"] / "chaos" / case_id / f"{case_id}_label.nii.gz"))
        data = np.asanyarray(label.dataobj)
        spleen = np.argwhere(data == 4)
        world = nib.affines.apply_affine(label.affine, spleen)
        source = np.round(nib.affines.apply_affine(np.linalg.inv(expected["affine"]), world)).astype(int)
        assert set(source[:, 2].tolist()) == {0}, case_id


def test_datalists_follow_the_official_splits_and_read_with_the_registry(prepared: dict, registry) -> None:
    out, truth = prepared["out"], prepared["truth"]
    combined = json.loads((out / "datalist.json").read_text())
    listed = {}
    for section in ("training", "validation", "testing"):
        for item in combined[section]:
            case_id = Path(item["image"]).parent.name
            assert item["image"] == f"{item['dataset']}/{case_id}/{case_id}.nii.gz"
            assert item["label"] == f"{item['dataset']}/{case_id}/{case_id}_label.nii.gz"
            listed[case_id] = (section, item["dataset"], item.get("modality"))
    assert sorted(listed) == sorted(truth.cases)
    for case_id, expected in truth.cases.items():
        section = official_sections(expected["dataset"])[expected["official"]]
        assert listed[case_id] == (section, expected["dataset"], expected["modality"]), case_id
    assert listed["lits_0000"][0] == "validation" and listed["lits_0001"][0] == "testing"
    assert listed["structseg_head_oar_0025"][0] == "validation"  # listed twice in the published split, once here
    assert [Path(i["image"]).parent.name for i in combined["training"]] == sorted(
        Path(i["image"]).parent.name for i in combined["training"]
    )
    data = read_datalist(out / "datalist.json", registry, ["training", "validation", "testing"], label_cache=None)
    assert not data.problems, data.summary()
    assert {item["dataset"] for item in data.section("training")} == set(registry.datasets)
    chaos = [i for i in data.section("training") if i["dataset"] == "chaos"]
    assert sorted(i["modality_index"] for i in chaos) == [2, 2, 3]  # t1_in, t1_out (T1), t2 (T2)
    for dataset in registry.datasets:  # each dataset's own datalist reads on its own too
        own = read_datalist(out / dataset / "datalist.json", registry, ["training", "validation"], label_cache=None)
        assert not own.problems, own.summary()


def test_a_second_run_redoes_nothing_and_overwrite_redoes(prepared: dict, capsys) -> None:
    raw, out = prepared["raw"], prepared["out"]
    label = out / "lits" / "lits_0006" / "lits_0006_label.nii.gz"
    before = label.stat().st_mtime_ns
    assert prepare("lits", "--src", raw / "lits", "--dst", out, "--allow_missing") == 0
    assert "lits: 0 prepared, 4 already prepared, 0 failed" in capsys.readouterr().out
    assert label.stat().st_mtime_ns == before
    assert prepare("lits", "--src", raw / "lits", "--dst", out, "--allow_missing", "--overwrite") == 0
    assert "lits: 4 prepared, 0 already prepared" in capsys.readouterr().out
    assert label.stat().st_mtime_ns != before
    assert not list((out / "lits" / ".staging").iterdir())


def test_all_in_parallel_processes_writes_the_same_datalist(prepared: dict, tmp_path: Path) -> None:
    done = run_cli("--all", prepared["raw"], "--dst", tmp_path, "--workers", "2", "--allow_missing", "true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "datalist.json").read_text()) == json.loads(
        (prepared["out"] / "datalist.json").read_text()
    )
    for case_id in ("chaos_22_t2", "autopet_PETCT_0410759456_1", "mnm_G2J1M5_1"):
        dataset = prepared["truth"].cases[case_id]["dataset"]
        for name in (f"{case_id}.nii.gz", f"{case_id}_label.nii.gz"):
            a = nib.load(str(tmp_path / dataset / case_id / name))
            b = nib.load(str(prepared["out"] / dataset / case_id / name))
            assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)) and np.allclose(
                a.affine, b.affine
            )
    assert "autopet: 3 prepared" in done.stdout and "100%" in done.stderr  # a progress bar per dataset


def test_published_splits_are_the_shared_reference(bundle_root: Path) -> None:
    facts_path = bundle_root.parent.parent / "shared" / "reference" / "hermes_datasets.json"
    if not facts_path.is_file():
        pytest.skip(f"published facts not found at {facts_path}")
    facts = json.loads(facts_path.read_text())["datasets"]
    for dataset, fact in facts.items():
        expected = {}
        for split, ids in fact["splits"].items():
            for case in ids:
                expected.setdefault(str(case), SECTION_OF[split])
        assert official_sections(dataset) == expected, dataset


# ------------------------------------------------------------------------------------------ bad downloads
def test_bad_downloads_are_one_line_each_and_the_rest_is_prepared(prepared: dict, tmp_path: Path, capsys) -> None:
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(prepared["raw"] / "lits", raw / "lits")
    (raw / "lits" / "Training Batch 1" / "segmentation-1.nii").unlink()  # a missing label
    kits = raw / "kits" / "data"
    shutil.copytree(prepared["raw"] / "kits" / "data", kits)
    bad = nib.load(str(kits / "case_00001" / "segmentation.nii.gz"))
    values = np.asanyarray(bad.dataobj).copy()
    values[0, 0, 0] = 7
    save(kits / "case_00001" / "segmentation.nii.gz", values, bad.affine)  # a value kits does not have
    btcv = raw / "bcv" / "RawData" / "Training"
    shutil.copytree(prepared["raw"] / "bcv" / "RawData" / "Training", btcv)
    small = nib.load(str(btcv / "label" / "label0032.nii.gz"))
    save(btcv / "label" / "label0032.nii.gz", np.asanyarray(small.dataobj)[:-2], small.affine)  # another size
    thorax = raw / "structseg" / "StructSeg" / "Thoracic_OAR"
    shutil.copytree(prepared["raw"] / "structseg" / "StructSeg" / "Thoracic_OAR", thorax)
    moved = nib.load(str(thorax / "3" / "label.nii.gz"))
    shifted = moved.affine.copy()
    shifted[:3, 3] += 4.0
    save(thorax / "3" / "label.nii.gz", np.asanyarray(moved.dataobj), shifted)  # another place in the world
    chaos = raw / "chaos"
    shutil.copytree(prepared["raw"] / "chaos", chaos)
    ground = chaos / "CHAOS_Train_Sets" / "Train_Sets" / "MR" / "22" / "T2SPIR" / "Ground"
    sorted(ground.glob("*.png"))[0].unlink()  # one slice short

    out = tmp_path / "out"
    expectations = [
        ("lits", raw / "lits", "FAILED lits_0001: missing case: ", "has no label file", "lits_0006"),
        ("kits", raw / "kits", "FAILED kits_0001 (", "label values [7] are not classes of dataset 'kits'", "kits_0000"),
        (
            "bcv",
            raw / "bcv",
            "FAILED bcv_img0032 (",
            "image size (16, 14, 6) differs from label size (14, 14, 6)",
            "bcv_img0030",
        ),
        (
            "structseg_oar",
            raw / "structseg",
            "FAILED structseg_oar_0003 (",
            "the label's geometry differs",
            "structseg_oar_0005",
        ),
        (
            "chaos",
            raw / "chaos",
            "FAILED chaos_22_t2 (",
            "has 4 ground-truth PNG slices but the DICOM series",
            "chaos_22_t1_in",
        ),
        ("kits", raw / "lits", "FAILED kits: ", "does not look like the kits download", None),
    ]
    for dataset, src, start, problem, good in expectations:
        code = prepare(dataset, "--src", src, "--dst", out, "--allow_missing")
        stdout, stderr = capsys.readouterr()
        lines = failed_lines(stderr)
        assert code == 1 and len(lines) == 1, (dataset, stderr)
        assert lines[0].startswith(start) and problem in lines[0], lines[0]
        assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("error: 1 problem(s)")
        if good is not None:
            assert (out / dataset / good / f"{good}_label.nii.gz").is_file(), good
            assert f"{dataset}: " in stdout and " failed" in stdout  # the summary
            listed = json.loads((out / dataset / "datalist.json").read_text())
            names = [Path(i["image"]).parent.name for s in listed.values() for i in s]
            assert good in names and lines[0].split()[1] not in names
    assert not (out / "chaos" / "chaos_22_t2").exists() and (out / "chaos" / "chaos_22_t1_out").is_dir()


def test_official_cases_absent_from_the_download_fail_unless_allowed(prepared: dict, tmp_path: Path, capsys) -> None:
    assert prepare("bcv", "--src", prepared["raw"] / "bcv", "--dst", tmp_path) == 1
    captured = capsys.readouterr()
    lines = failed_lines(captured.err)
    assert lines[0] == (
        f"FAILED bcv case img0033: missing case: not found under {prepared['raw'] / 'bcv'} "
        "(BTCV abdomen (Synapse RawData.zip): Training/img/imgNNNN.nii.gz and "
        "Training/label/labelNNNN.nii.gz)"
    )
    assert (
        len(lines) == 11
        and lines[-1] == f"FAILED bcv: 18 more official cases not found under {prepared['raw'] / 'bcv'}"
    )
    assert "bcv: 2 prepared, 0 already prepared, 28 failed, 28 official cases not in the download" in captured.out


def test_an_interrupted_case_leaves_nothing_half_written(prepared: dict, tmp_path: Path, monkeypatch) -> None:
    import scripts.prepare.staging as staging

    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    stale = tmp_path / "autopet" / ".staging" / f"autopet_PETCT_8aa48809ea_0.{dead}"
    stale.mkdir(parents=True)
    (stale / "autopet_PETCT_8aa48809ea_0.nii.gz").write_bytes(b"half an image")
    calls = {"n": 0}
    real = staging.write_nifti

    def dies_on_the_second_file(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(staging, "write_nifti", dies_on_the_second_file)
    assert prepare("autopet", "--src", prepared["raw"] / "autopet", "--dst", tmp_path, "--allow_missing") == 1
    assert not stale.exists(), "the staging folder of a killed run survived"
    cases = sorted(p.name for p in (tmp_path / "autopet").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert cases == ["autopet_PETCT_0410759456_1", "autopet_PETCT_8aa48809ea_0"]  # the first case failed whole
    assert not list((tmp_path / "autopet" / ".staging").iterdir()), "the failed case left its staging folder"
    listed = json.loads((tmp_path / "autopet" / "datalist.json").read_text())
    assert [Path(i["image"]).parent.name for i in listed["training"]] == ["autopet_PETCT_0410759456_1"]


# ------------------------------------------------------------------------------------------ training
def test_published_recipe_trains_on_all_eleven_prepared_datasets(prepared: dict, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = run_workflow_in_process(
        "training", "--datalist", prepared["out"] / "datalist.json", "--runs_root", runs, "--run_name", "p",
        "--base_channels", "4", "--roi_size", "[32,32,32]", "--spacing", "[3,3,3]", "--block_margin", "0",
        "--batch_size", "1", "--num_workers", "0", "--max_epochs", "1", "--iterations_per_epoch", "2",
        "--warmup_epochs", "0", "--val_interval", "1", "--val_final_epochs", "0", "--val_overlap", "0",
        "--sw_batch_size", "4", configs=("configs/train.json", "configs/train_published.json"), expect_ok=True)
    log = done.stdout + done.stderr
    assert (runs / "p" / "final.pt").is_file()
    validation = json.loads((prepared["out"] / "datalist.json").read_text())["validation"]
    for dataset in {item["dataset"] for item in validation}:
        assert f"val_mean_dice/{dataset}" in log, dataset
