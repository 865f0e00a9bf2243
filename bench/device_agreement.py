"""The device-agnostic pipeline on a GPU against what the CPU pipeline writes (an experiment, not a test).

Runs ``monai.bundle run inference`` on the reference blocks of tests/data/case_pipeline_reference (a lung CT block,
the same block stored oblique, a brain T1 block; cut by tests/test_case_pipeline.py, passed here as a folder) with
the reference's tiny weights, once in float32 and once with bf16 autocast, and compares each label map with the
CPU's: the fraction of equal voxels and the Dice of every label. Random tiny weights put many probabilities near the
threshold, so this is a strict check of the arithmetic, not of a trained model's masks.

    python bench/device_agreement.py --inputs BLOCKS_DIR [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "case_pipeline_reference"


def compare(written: Path, reference: Path) -> dict:
    a, b = np.asarray(nib.load(written).dataobj), np.asarray(nib.load(reference).dataobj)
    dice = {}
    for label in sorted(set(np.unique(b).tolist()) - {0}):
        x, y = a == label, b == label
        dice[int(label)] = round(float(2 * (x & y).sum() / max(1, x.sum() + y.sum())), 4)
    return {"equal_voxels": round(float((a == b).mean()), 5), "min_label_dice": min(dice.values()) if dice else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, required=True, help="folder with ct/ and mr/ blocks")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        datalist = Path(tmp) / "blocks.json"  # one run for all blocks: each item names its modality
        items = [{"image": str(p), "modality": "ct"} for p in sorted((args.inputs.resolve() / "ct").glob("*.nii.gz"))]
        items += [{"image": str(p), "modality": "t1"} for p in sorted((args.inputs.resolve() / "mr").glob("*.nii.gz"))]
        datalist.write_text(json.dumps({"testing": items}))
        for amp in ("false", "true"):
            out = Path(tmp) / f"amp_{amp}"
            command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file",
                       "configs/inference.json", "--input", str(datalist), "--output_dir", str(out),
                       "--ckpt_path", str(REFERENCE / "weights_base2_fp16.pt"), "--base_channels", "2",
                       "--roi_size", "[32,32,32]", "--amp", amp]
            done = subprocess.run(command, cwd=ROOT / "bundle", capture_output=True, text=True,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if done.returncode != 0:
                raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
            for reference in sorted(REFERENCE.glob("*_seg.nii.gz")):
                results[f"{reference.name} amp={amp}"] = compare(out / reference.name, reference)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
