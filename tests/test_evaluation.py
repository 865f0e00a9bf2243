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
    for space, d, h, s in (("native", dice, hd95, status), ("resampled", r_dice or dice, r_hd95 or hd95, r_status or status)):
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
