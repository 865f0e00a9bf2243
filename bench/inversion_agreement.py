"""How much the way back to the input's grid and CPU bf16 change a trained model's masks (an experiment, not a test).

1. Trains a small Hermes-R (base 8) on the two partially labelled phantom datasets with the bundle's training workflow
   (240 iterations at 1.5 mm in 32^3 windows, LAMB lr 5e-3, EMA 0.9).
2. Stores each held-out phantom on a native grid unlike the network's: anisotropic voxels (1.1 x 1.1 x 2.0 mm) and an
   oblique direction (rotated 15 deg about x and 25 deg about z), with its truth on the same grid.
3. Runs ``monai.bundle run inference`` on them: float32 with ``--invert probabilities`` (the reference), float32 with
   ``--invert labels``, and ``--invert probabilities --cpu_amp true`` (bf16 autocast on the CPU), each timed.
4. Reports, per label, the Dice of each variant's label map against the reference's (``--invert`` changes the label
   map; masks are always inverted from probabilities), per task the Dice of its masks against the reference's and
   against the truth (the smallest over the cases for agreement, the mean for the truth).

    python bench/inversion_agreement.py [--json out.json] [--iterations_per_epoch 40]

``--gpu`` (a CUDA machine) trains there and compares instead the GPU's masks, in float32 and with the shipped bf16
autocast, against the CPU's float32 ones: GPU-versus-CPU agreement on trained weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
sys.path.insert(0, str(BUNDLE))
#: variant -> (extra inference arguments, runs on the GPU); the first is the reference.
VARIANTS = {
    "fp32, invert probabilities": (["--invert", "probabilities"], False),
    "fp32, invert labels": (["--invert", "labels"], False),
    "bf16 CPU autocast, invert probabilities": (["--invert", "probabilities", "--cpu_amp", "true"], False),
}
GPU_VARIANTS = {
    "fp32, invert probabilities": (["--invert", "probabilities"], False),
    "GPU fp32": (["--amp", "false"], True),
    "GPU bf16 autocast (shipped)": (["--amp", "true"], True),
}


def oblique(affine_spacing: tuple[float, float, float], shape: tuple[int, ...]) -> np.ndarray:
    ax, az = np.radians(15.0), np.radians(25.0)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(affine_spacing)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations_per_epoch", type=int, default=40)
    parser.add_argument("--json", default=None)
    parser.add_argument("--gpu", action="store_true", help="GPU fp32 and bf16 against the CPU (train on the GPU)")
    args = parser.parse_args()
    variants = GPU_VARIANTS if args.gpu else VARIANTS
    from scripts.sample_suite import make_phantom_datasets

    gpu_env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env = {**gpu_env, "CUDA_VISIBLE_DEVICES": ""}
    results: dict = {"variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        phantoms = make_phantom_datasets(tmp / "phantoms", n_cases=16, size=32, n_holdout=2, seed=0)
        began = time.perf_counter()
        train = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
                 "--datalist", phantoms["datalist"], "--runs_root", str(tmp / "runs"), "--run_name", "p",
                 "--base_channels", "8", "--roi_size", "[32,32,32]", "--val_overlap", "0", "--sw_batch_size", "4",
                 "--spacing", "[1.5,1.5,1.5]", "--max_epochs", "6", "--iterations_per_epoch",
                 str(args.iterations_per_epoch), "--val_interval", "6", "--warmup_epochs", "0.25",
                 "--learning_rate", "0.005", "--ema_decay", "0.9", "--affine_prob", "0", "--export_to_bundle",
                 "false"]
        done = subprocess.run(train, cwd=BUNDLE, capture_output=True, text=True, env=gpu_env if args.gpu else env)
        if done.returncode:
            raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
        results["training_s"] = round(time.perf_counter() - began, 1)
        weights = tmp / "runs" / "p" / "final.pt"
        datalist = json.loads(Path(phantoms["datalist"]).read_text())
        native = tmp / "native"
        native.mkdir()
        truths = {}
        for item in datalist["validation"]:
            root = Path(phantoms["root"])
            image = np.asarray(nib.load(root / item["image"]).dataobj)
            structures = np.asarray(nib.load(root / item["structures"]).dataobj)
            name = f"{item['dataset']}_{Path(item['image']).name.split('_')[0]}"
            affine = oblique((1.1, 1.1, 2.0), image.shape)
            nib.save(nib.Nifti1Image(image, affine), native / f"{name}.nii.gz")
            truths[name] = (item["dataset"], structures)
        masks: dict[str, dict] = {}
        label_maps: dict[str, dict] = {}
        for variant, (extra, on_gpu) in variants.items():
            out = tmp / f"out_{len(masks)}"
            command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file",
                       "configs/inference.json", "--input", str(native), "--output_dir", str(out), "--ckpt_path",
                       str(weights), "--base_channels", "8", "--roi_size", "[32,32,32]", "--modality", "ct",
                       "--save_task_masks", "true", "--profile", "true",
                       "--task_registry_extra", json.dumps([phantoms["task_registry"]]), *extra]
            began = time.perf_counter()
            done = subprocess.run(command + ["--tasks", ",".join(sorted({d for d, _ in truths.values()}))],
                                  cwd=BUNDLE, capture_output=True, text=True, env=gpu_env if on_gpu else env)
            if done.returncode:
                raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
            windows = [line for line in done.stdout.splitlines() if line.startswith("Profile")]
            results["variants"][variant] = {"wall_s": round(time.perf_counter() - began, 1),
                                            "profile": windows[0] if windows else ""}
            masks[variant] = {p.name: np.asarray(nib.load(p).dataobj) > 0 for p in out.glob("*_task-*.nii.gz")}
            label_maps[variant] = {p.name: np.asarray(nib.load(p).dataobj) for p in out.glob("*_seg.nii.gz")}
        reference = masks["fp32, invert probabilities"]
        structure_of = {"organ": 1, "lesion": 2, "marker": 3}
        for variant, found in masks.items():
            agreement, truth_dice = {}, {}
            for file, mask in sorted(found.items()):
                task = file.split("_task-", 1)[1].removesuffix(".nii.gz")
                agreement.setdefault(task, []).append(dice(mask, reference[file]))
                case = file.split("_task-", 1)[0]
                _, structures = truths[case]
                value = next((v for k, v in structure_of.items() if k in task), None)
                if value is not None:
                    truth_dice.setdefault(task, []).append(dice(mask, structures == value))
            reference_maps = label_maps["fp32, invert probabilities"]
            per_label: dict[int, list[float]] = {}
            for file, labels in label_maps[variant].items():
                for value in sorted(set(np.unique(reference_maps[file]).tolist()) - {0}):
                    per_label.setdefault(int(value), []).append(dice(labels == value, reference_maps[file] == value))
            results["variants"][variant]["label_map_dice_to_fp32_probabilities_min"] = {
                k: round(float(np.min(v)), 4) for k, v in per_label.items()}
            results["variants"][variant]["dice_to_fp32_probabilities"] = {
                k: round(float(np.min(v)), 4) for k, v in agreement.items()}
            results["variants"][variant]["dice_to_truth_mean"] = {
                k: round(float(np.mean(v)), 4) for k, v in truth_dice.items()}
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
