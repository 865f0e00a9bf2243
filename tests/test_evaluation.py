"""Evaluation: metric values on real NIfTI masks with known geometry, tables, and the evaluate bundle config."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import Compose, LoadImaged, Orientationd, Spacingd

from scripts.evaluation.metrics import score_masks
from scripts.evaluation.tables import markdown_report, task_summaries, write_csv, write_markdown


def _save_mask(path: Path, mask: np.ndarray, spacing: tuple[float, float, float]) -> Path:
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.diag([*spacing, 1.0])), path)
    return path


def _load_mask(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    image = nib.load(path)
    return np.asarray(image.dataobj) > 0, tuple(float(z) for z in image.header.get_zooms()[:3])


def _cube(shape=(40, 40, 40), start=10, size=10) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[start : start + size, start : start + size, start : start + size] = True
    return mask


def test_cube_shift_gives_hand_computed_dice_hd95_nsd(tmp_path: Path):
    # A 10-voxel cube and the same cube shifted by one voxel along the 3 mm axis (spacing 1 x 1 x 3 mm).
    label, spacing = _load_mask(_save_mask(tmp_path / "label.nii.gz", _cube(), (1.0, 1.0, 3.0)))
    pred, _ = _load_mask(_save_mask(tmp_path / "pred.nii.gz", np.roll(_cube(), 1, axis=2), (1.0, 1.0, 3.0)))
    assert spacing == (1.0, 1.0, 3.0)

    (scores,) = score_masks(pred[None], label[None], spacing, nsd_tolerance_mm=2.0, nsd_use_subvoxels=False)
    # overlap 10*10*9 of 1000 + 1000 voxels
    assert scores.dice == pytest.approx(0.9)
    # the face that moved is one 3 mm slice away from the other surface; > 5 % of boundary voxels are at 3 mm
    assert scores.hd95_mm == pytest.approx(3.0)
    # Boundary voxels: 488 per mask. Per direction, 116 are farther than 2 mm: the moved face (100) and the 4x4
    # centre of the opposite face, whose nearest other-surface voxel is the 3 mm neighbour slice.
    assert scores.nsd == pytest.approx((488 - 116) * 2 / (488 * 2))
    assert scores.status == "ok" and scores.label_voxels == 1000 and scores.pred_voxels == 1000

    (tolerant,) = score_masks(pred[None], label[None], spacing, nsd_tolerance_mm=3.0, nsd_use_subvoxels=False)
    assert tolerant.nsd == pytest.approx(1.0)
    # the default surfel-area NSD agrees at the limits and stays strictly between them below the shift
    (area_strict,) = score_masks(pred[None], label[None], spacing, nsd_tolerance_mm=2.0)
    (area_tolerant,) = score_masks(pred[None], label[None], spacing, nsd_tolerance_mm=3.0)
    assert area_tolerant.nsd == pytest.approx(1.0)
    assert 0.5 < area_strict.nsd < 1.0

    # the same one-voxel shift along a 1 mm axis is 1 mm
    (in_plane,) = score_masks(np.roll(label, 1, axis=0)[None], label[None], spacing, nsd_tolerance_mm=2.0)
    assert in_plane.hd95_mm == pytest.approx(1.0)
    assert in_plane.nsd == pytest.approx(1.0)


def test_empty_mask_conventions():
    label = np.zeros((4, 24, 24, 24), bool)
    pred = np.zeros_like(label)
    label[0, 5:10, 5:10, 5:10] = True  # found
    pred[0, 5:10, 5:10, 5:10] = True
    label[1, 5:10, 5:10, 5:10] = True  # missed
    pred[2, 5:10, 5:10, 5:10] = True  # false positive; channel 3 absent from both
    ok, missed, false_positive, absent = score_masks(pred, label, (2.0, 2.0, 2.0))
    assert (ok.dice, ok.hd95_mm, ok.nsd, ok.status) == (pytest.approx(1.0), 0.0, pytest.approx(1.0), "ok")
    assert (missed.dice, missed.nsd, missed.status) == (0.0, 0.0, "missed") and math.isnan(missed.hd95_mm)
    assert (false_positive.dice, false_positive.nsd, false_positive.status) == (0.0, 0.0, "false_positive")
    assert math.isnan(false_positive.hd95_mm)
    assert (absent.dice, absent.nsd, absent.status) == (1.0, 1.0, "absent") and math.isnan(absent.hd95_mm)


def test_bad_metric_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="differs from label shape"):
        score_masks(np.zeros((1, 8, 8, 8)), np.zeros((1, 8, 8, 9)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        score_masks(np.zeros((1, 8, 8, 8)), np.zeros((1, 8, 8, 8)), (1, 0, 1))


def test_native_and_resampled_space_differ_as_expected(tmp_path: Path):
    # 0.75 x 0.75 x 3 mm label; the prediction is shifted by one 0.75 mm voxel in-plane.
    spacing = (0.75, 0.75, 3.0)
    label = np.zeros((60, 60, 16), bool)
    label[10:30, 10:30, 4:10] = True
    files = {
        "label": _save_mask(tmp_path / "label.nii.gz", label, spacing),
        "pred": _save_mask(tmp_path / "pred.nii.gz", np.roll(label, 1, axis=0), spacing),
    }
    native_label, native_spacing = _load_mask(files["label"])
    native_pred, _ = _load_mask(files["pred"])
    (native,) = score_masks(native_pred[None], native_label[None], native_spacing)
    assert native.dice == pytest.approx(2 * 19 * 20 * 6 / (2 * 20 * 20 * 6))  # 0.95
    assert native.hd95_mm == pytest.approx(0.75)

    # the 1.5 mm grid the model works on (nearest-neighbour, as the evaluation resamples labels)
    to_model_grid = Compose(
        [
            LoadImaged(["label", "pred"], ensure_channel_first=True, image_only=True),
            Orientationd(["label", "pred"], axcodes="RAS"),
            Spacingd(["label", "pred"], pixdim=(1.5, 1.5, 1.5), mode="nearest"),
        ]
    )
    resampled = to_model_grid({k: str(v) for k, v in files.items()})
    (coarse,) = score_masks(resampled["pred"], resampled["label"], resampled["label"].pixdim.tolist())
    # 20 voxels of 0.75 mm become 10 of 1.5 mm and the 0.75 mm shift rounds up to one whole 1.5 mm voxel
    assert int(resampled["label"].sum()) == 10 * 10 * 12
    assert coarse.dice == pytest.approx(0.9)
    assert coarse.hd95_mm == pytest.approx(1.5)


def _row(case, dataset, task_id, task, dice, hd95, status, r_dice=None, r_hd95=None, r_status=None):
    row = {"case": case, "dataset": dataset, "task_id": task_id, "task": task, "modality": "ct"}
    resampled = (r_dice or dice, r_hd95 or hd95, r_status or status)
    for space, d, h, s in (("native", dice, hd95, status), ("resampled", *resampled)):
        row.update({f"{space}_dice": d, f"{space}_hd95_mm": h, f"{space}_nsd": d, f"{space}_status": s,
                    f"{space}_label_voxels": 0 if s in ("absent", "false_positive") else 10,
                    f"{space}_pred_voxels": 0 if s in ("absent", "missed") else 10})
    return row


def test_tables_average_labelled_cases_and_never_overwrite(tmp_path: Path):
    rows = [
        _row("a", "lits", 0, "liver", 0.9, 2.0, "ok"),
        _row("b", "lits", 0, "liver", 0.7, 4.0, "ok", r_dice=0.5),
        _row("a", "lits", 1, "liver tumor", 0.0, math.nan, "missed"),
        _row("b", "lits", 1, "liver tumor", 0.6, 1.0, "ok"),
        _row("c", "lits", 1, "liver tumor", 0.0, math.nan, "false_positive"),  # label empty: not averaged
        _row("d", "kits", 2, "kidney", 1.0, math.nan, "absent"),
        _row("e", "kits", 2, "kidney", 0.8, 3.0, "ok"),
        {"case": "f", "dataset": "kits", "task_id": -1, "task": "", "error": "f.nii.gz: cannot read"},
    ]
    summaries = task_summaries(rows)
    liver, tumour = summaries["lits"]
    assert liver["native_dice"] == pytest.approx(0.8) and liver["resampled_dice"] == pytest.approx(0.7)
    assert liver["native_hd95_mm"] == pytest.approx(3.0)
    assert tumour["native_dice"] == pytest.approx(0.3) and tumour["native_labelled"] == 2
    assert tumour["native_hd95_mm"] == pytest.approx(1.0)  # the missed case has no HD95 and is counted instead
    assert (tumour["native_missed"], tumour["native_false_positive"]) == (1, 1)
    assert summaries["kits"][0]["native_dice"] == pytest.approx(0.8)

    report = markdown_report(rows, nsd_tolerance_mm=2.0, resampled_spacing_mm=(1.5, 1.5, 1.5))
    assert "| lits | 2 | 3 | 0.5500 |" in report  # mean of the task means 0.8 and 0.3
    assert "| 1 | liver tumor | 2 | 0.3000 |" in report
    assert "- `f`: f.nii.gz: cannot read" in report

    first = write_csv(rows, tmp_path / "metrics.csv")
    second = write_csv(rows[:1], tmp_path / "metrics.csv")
    assert first.name == "metrics.csv" and second.name == "metrics_1.csv"
    with first.open() as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == len(rows) and written[2]["native_status"] == "missed"
    assert written[2]["native_hd95_mm"] == "nan"
    assert write_markdown(report, tmp_path / "metrics.md").read_text() == report


def test_evaluation_cases_name_modality_and_report_unusable_datalists(tmp_path: Path, bundle_root: Path):
    import json

    from scripts.evaluation.cases import LABEL_FILE_KEY, evaluation_cases
    from scripts.registry import TaskRegistry

    spacing = (1.0, 1.0, 2.0)
    _save_mask(tmp_path / "kits_img.nii.gz", np.zeros((8, 8, 4)), spacing)
    kits_label = np.zeros((8, 8, 4))
    kits_label[1:3, 1:3, 1:3] = 1
    _save_mask(tmp_path / "kits_lab.nii.gz", kits_label, spacing)
    chaos_label = np.zeros((8, 8, 4))
    chaos_label[2:4, 2:4, 1:3] = 2
    _save_mask(tmp_path / "chaos_img.nii.gz", np.zeros((8, 8, 4)), spacing)
    _save_mask(tmp_path / "chaos_lab.nii.gz", chaos_label, spacing)
    datalist = tmp_path / "datalist.json"
    kits_item = {"image": "kits_img.nii.gz", "label": "kits_lab.nii.gz", "dataset": "kits"}
    datalist.write_text(json.dumps({"validation": [
        kits_item,
        {"image": "chaos_img.nii.gz", "label": "chaos_lab.nii.gz", "dataset": "chaos", "modality": "t2"},
        kits_item,  # listed twice: scored once, and said so
        {"image": "kits_img.nii.gz", "dataset": "kits"},
    ]}))
    registry = TaskRegistry.load(bundle_root / "configs" / "task_registry.json")
    cases = evaluation_cases(datalist, registry, section="validation")
    assert cases.error is None
    kits, chaos = cases.items
    assert (kits["case"], kits["modality"], kits["task_index"]) == ("kits_img", "ct", [2, 3])
    assert kits[LABEL_FILE_KEY] == str(tmp_path / "kits_lab.nii.gz") and "label" not in kits
    assert (chaos["modality"], chaos["modality_index"]) == ("t2", 3)
    assert cases.repeats == ["validation item 2 (image kits_img.nii.gz): repeats item 0; used once"]
    assert cases.problems == [("kits_img.nii.gz", "validation item 3: 'label' is missing (every item of this section "
                                                  "needs its label file)")]
    assert cases.datasets["kits_img.nii.gz"] == "kits"

    assert "section 'testing': missing" in evaluation_cases(datalist, registry, section="testing").error
    assert "pass --datalist" in evaluation_cases(None, registry).error


# ---------------------------------------------------------------------------------------------------------------------
# The evaluate workflow: configs/inference.json + configs/evaluate.json

def test_evaluate_config_has_the_inference_properties(bundle_root: Path, monkeypatch: pytest.MonkeyPatch):
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(bundle_root)
    workflow = ConfigWorkflow(
        workflow_type="infer",  # Model Zoo checks an overlay with the workflow type of the config it extends
        config_file=["configs/inference.json", "configs/evaluate.json"],
        meta_file="configs/metadata.json",
        logging_file="configs/logging.conf" if (bundle_root / "configs" / "logging.conf").is_file() else None,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    # without --datalist nothing fails while the config resolves; the run reports it in one line
    assert "pass --datalist" in workflow.parser.get_parsed_content("evaluation_cases").error


def _crop_case(image: Path, label: Path, box: tuple[slice, slice, slice], out: Path) -> tuple[Path, Path]:
    """A small real case: crop image and label together, moving the affine's origin to the crop's corner."""
    files = []
    for source, kind in ((image, "image"), (label, "label")):
        nifti = nib.load(source)
        affine = nifti.affine.copy()
        affine[:3, 3] = nifti.affine[:3, :3] @ np.array([s.start for s in box]) + nifti.affine[:3, 3]
        data = np.asarray(nifti.dataobj)[box]
        target = out / f"lung1_crop_{kind}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.int16 if kind == "image" else np.uint8), affine), target)
        files.append(target)
    return files[0], files[1]


@pytest.fixture(scope="module")
def evaluate_run(sample_suite, tmp_path_factory, bundle_root: Path) -> dict:
    import json

    import torch

    from conftest import run_workflow_in_process

    from scripts.networks.hermes import HermesResUNet
    from scripts.registry import TaskRegistry

    work = tmp_path_factory.mktemp("evaluate")
    root = Path(sample_suite["root"])
    lung_image, lung_label = _crop_case(
        root / "sample_lung_ct" / "lung1_image.nii.gz", root / "sample_lung_ct" / "lung1_label.nii.gz",
        (slice(196, 244), slice(340, 380), slice(28, 38)), work,
    )
    # same size as its image but 10 mm away: only a geometry check can catch it
    shifted = nib.load(lung_label)
    moved = shifted.affine.copy()
    moved[0, 3] += 10.0
    shifted_label = work / "lung1_shifted_label.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(shifted.dataobj), moved), shifted_label)
    shifted_image = work / "lung1_shifted_image.nii.gz"
    shifted_image.write_bytes(lung_image.read_bytes())

    breast = root / "sample_breast_mr"
    datalist = work / "datalist.json"
    datalist.write_text(json.dumps({"testing": [
        {"image": str(breast / "breast1_image.nii.gz"), "label": str(breast / "breast1_label.nii.gz"),
         "dataset": "sample_breast_mr"},
        {"image": lung_image.name, "label": lung_label.name, "dataset": "sample_lung_ct"},
        {"image": lung_image.name, "label": "no_such_label.nii.gz", "dataset": "sample_lung_ct"},
        {"image": shifted_image.name, "label": shifted_label.name, "dataset": "sample_lung_ct"},
    ]}))
    registry = TaskRegistry.load(bundle_root / "configs" / "task_registry.json", [sample_suite["task_registry"]])
    torch.manual_seed(1)  # (seed 0 makes this tiny random network produce denormal floats: 17x slower on CPU)
    weights = work / "tiny.pt"
    torch.save(HermesResUNet(base_channels=4, num_tasks=registry.num_tasks).state_dict(), weights)
    out = work / "out"
    completed = run_workflow_in_process(
        "evaluate", "--datalist", datalist, "--task_registry_extra", f"['{sample_suite['task_registry']}']",
        "--ckpt_path", weights, "--base_channels", "4", "--roi_size", "[32,32,32]",
        "--overlap", "0", "--output_dir", out, "--save_predictions", "True", "--statistics", "true",
    )
    return {"completed": completed, "out": out, "registry": registry, "lung_image": lung_image,
            "labels": {"breast1_image": breast / "breast1_label.nii.gz", "lung1_crop_image": lung_label}}


def test_evaluate_run_reports_bad_cases_and_goes_on(evaluate_run: dict):
    completed = evaluate_run["completed"]
    assert completed.returncode == 1, completed.stdout + completed.stderr[-3000:]  # a case failed -> exit status 1
    assert "FAILED lung1_crop_image.nii.gz (0.0 s): lung1_crop_image.nii.gz: testing item 2: label file" in completed.stdout
    assert "FAILED " in completed.stdout and "different grids" in completed.stdout
    assert "done " in completed.stdout and "breast1_image.nii.gz" in completed.stdout
    assert "sample_lung_ct: native Dice lung tumor" in completed.stdout


def test_evaluate_run_writes_one_row_per_case_and_task_with_consistent_numbers(evaluate_run: dict):
    out = evaluate_run["out"]
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    scored = {r["case"]: r for r in rows if not r["error"]}
    errors = {r["case"]: r["error"] for r in rows if r["error"]}
    assert set(scored) == {"breast1_image", "lung1_crop_image"}  # one task each in these datasets
    assert set(errors) == {"lung1_crop_image", "lung1_shifted_image"}  # the item without label file; the moved label
    assert scored["breast1_image"]["task"] == "breast lesion" and scored["lung1_crop_image"]["task"] == "lung tumor"
    assert scored["lung1_crop_image"]["modality"] == "ct" and scored["breast1_image"]["modality"] == "mr"

    for case, row in scored.items():
        label_file = evaluate_run["labels"][case]
        label_nifti = nib.load(label_file)
        label = np.asarray(label_nifti.dataobj) == 1
        zooms = [float(z) for z in label_nifti.header.get_zooms()[:3]]
        assert [float(v) for v in row["native_spacing_mm"].split()] == pytest.approx(zooms, rel=1e-4)
        assert [float(v) for v in row["resampled_spacing_mm"].split()] == pytest.approx([1.5, 1.5, 1.5])
        assert int(row["native_label_voxels"]) == int(label.sum())
        # nearest-neighbour resampling keeps the lesion's volume roughly (small lesions: coarse)
        expected = label.sum() * np.prod(zooms) / 1.5**3
        assert abs(int(row["resampled_label_voxels"]) - expected) < 0.3 * expected

        # the saved native prediction reproduces the native-space numbers independently
        pred_file = out / "predictions" / f"{case}_task-{row['task'].replace(' ', '-')}.nii.gz"
        pred_nifti = nib.load(pred_file)
        pred = np.asarray(pred_nifti.dataobj) > 0
        assert pred.shape == label.shape and np.allclose(pred_nifti.affine, label_nifti.affine, atol=1e-3)
        assert int(row["native_pred_voxels"]) == int(pred.sum())
        dice = 2 * (pred & label).sum() / (pred.sum() + label.sum())
        assert float(row["native_dice"]) == pytest.approx(dice, abs=1e-5)
        (again,) = score_masks(pred[None], label[None], zooms)
        assert row["native_status"] == again.status
        if again.status == "ok":
            assert float(row["native_hd95_mm"]) == pytest.approx(again.hd95_mm, rel=1e-4)
            assert float(row["native_nsd"]) == pytest.approx(again.nsd, rel=1e-4)


def test_evaluate_run_gives_the_reference_labels_the_inference_statistics(evaluate_run: dict):
    """--statistics true: the same columns as inference's statistics.csv, for each task of the reference labels."""
    from scripts.cases.statistics import CSV_COLUMNS

    with (evaluate_run["out"] / "statistics.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = [row for row in reader if row["case"] == "lung1_crop_image"]
    image = nib.load(evaluate_run["lung_image"])
    hu = np.asarray(image.dataobj, dtype=np.float64)
    labels = np.asarray(nib.load(evaluate_run["labels"]["lung1_crop_image"]).dataobj)
    tasks = evaluate_run["registry"].tasks_of("sample_lung_ct")
    assert [row["structure"] for row in rows] == [task.name for task in tasks]
    voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000.0
    for row, task in zip(rows, tasks):
        inside = labels == task.label
        assert int(row["voxels"]) == int(inside.sum()) and inside.any()
        assert float(row["volume_ml"]) == pytest.approx(inside.sum() * voxel_ml, rel=1e-5)
        assert float(row["mean"]) == pytest.approx(hu[inside].mean(), rel=1e-5) and row["intensity_unit"] == "HU"
        assert float(row["p95"]) == pytest.approx(np.percentile(hu[inside], 95), rel=1e-5)
        centre = image.affine @ [*np.argwhere(inside).mean(0), 1.0]
        np.testing.assert_allclose([float(v) for v in row["centre_of_mass_ras_mm"].split()], centre[:3], atol=1e-3)


def test_evaluate_run_writes_the_markdown_summary(evaluate_run: dict):
    report = (evaluate_run["out"] / "metrics.md").read_text()
    assert "| sample_breast_mr | 1 | 1 |" in report and "| sample_lung_ct | 1 | 1 |" in report
    assert "## sample_lung_ct" in report and "| 72 | lung tumor | 1 |" in report
    assert "- `lung1_shifted_image`:" in report
    assert "- `lung1_crop_image`: lung1_crop_image.nii.gz: testing item 2: label file" in report
