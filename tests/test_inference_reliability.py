"""What a user's inference and evaluation runs can rely on (real processes, real files, real signals).

Window batching gives the same answer; MLflow tracking attaches to both workflows; a second run into a folder in use
stops at once; an unusable output folder is found before any case is computed; Ctrl-C ends with a summary and
``--skip_existing`` finishes the batch; a degenerate affine and a label map given as the image are named.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.io.output_folder import OutputFolder
from scripts.networks.hermes import HermesResUNet
from scripts.registry import TaskRegistry
from conftest import run_workflow, run_workflow_in_process, start_workflow
from test_inference_runs import crop, save_nifti

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
TINY = ["--base_channels", "4", "--roi_size", "[32,32,32]"]


@pytest.fixture(scope="module")
def case(sample_suite, tmp_path_factory) -> dict:
    """A real CT block (68 x 68 x 40 mm) that needs 9 windows of 32^3 at 1.5 mm and overlap 0.5, its lung-tumour
    label, and tiny random weights."""
    root = Path(sample_suite["root"]) / "sample_lung_ct"
    folder = tmp_path_factory.mktemp("multiwindow")
    image, affine = crop(root / "lung1_image.nii.gz", (180, 300, 28), (120, 120, 8))
    label, _ = crop(root / "lung1_label.nii.gz", (180, 300, 28), (120, 120, 8))
    save_nifti(folder / "ct.nii.gz", image, affine)
    save_nifti(folder / "ct_label.nii.gz", label.astype(np.uint8), affine)
    torch.manual_seed(1)
    registry = TaskRegistry.load(BUNDLE / "configs" / "task_registry.json", [sample_suite["task_registry"]])
    torch.save(HermesResUNet(base_channels=4, num_tasks=registry.num_tasks).state_dict(), folder / "tiny.pt")
    registry.write_companion(folder / "tiny.pt")  # as an export does: the weights bring their extra tasks
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"task_registry": sample_suite["task_registry"], "testing": [
        {"image": "ct.nii.gz", "label": "ct_label.nii.gz", "dataset": "sample_lung_ct"}]}))
    return {"folder": folder, "image": folder / "ct.nii.gz", "weights": folder / "tiny.pt", "datalist": datalist}


def _mlflow_metrics(database: Path) -> dict[str, float]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("select key, value from metrics").fetchall()
    return {key: value for key, value in rows}


def test_window_batches_of_two_give_the_same_answer_and_mlflow_tracks_both_workflows(case, tmp_path):
    """Inference and evaluation with --sw_batch_size 1 and 2 on a volume of several windows agree; the batch-1 runs
    also log to a real MLflow store through --tracking mlflow (which attaches to the case engine)."""
    probabilities, metrics = {}, {}
    tracking = ["--tracking", "mlflow", "--tracking_uri", f"sqlite:///{tmp_path / 'mlruns.db'}"]
    for batch in (1, 2):
        logged = tracking if batch == 1 else []
        out = tmp_path / f"inference_{batch}"
        done = run_workflow_in_process("inference", *TINY, "--input", case["image"], "--output_dir", out,
                                       "--ckpt_path", case["weights"], "--modality", "ct", "--tasks", "liver,spleen",
                                       "--overlap", "0.5", "--sw_batch_size", batch, "--save_probabilities", "true",
                                       *logged)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        probabilities[batch] = np.stack([np.asarray(nib.load(out / f"ct_prob-{name}.nii.gz").dataobj)
                                         for name in ("liver", "spleen")])
        if logged:
            assert _mlflow_metrics(tmp_path / "mlruns.db")["cases_done"] == 1.0
        evaluated = tmp_path / f"evaluate_{batch}"
        done = run_workflow_in_process("evaluate", *TINY, "--datalist", case["datalist"], "--output_dir", evaluated,
                                       "--ckpt_path", case["weights"], "--overlap", "0.5", "--sw_batch_size", batch,
                                       *logged)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with (evaluated / "metrics.csv").open() as handle:
            metrics[batch] = list(csv.DictReader(handle))
    assert 0.0 <= _mlflow_metrics(tmp_path / "mlruns.db")["mean_dice_native/sample_lung_ct"] <= 1.0
    assert probabilities[1].std() > 0  # a real, varying answer
    np.testing.assert_allclose(probabilities[2], probabilities[1], atol=1e-5)
    (one,), (two,) = metrics[1], metrics[2]  # batched convolutions round differently: a voxel may cross 0.5
    assert one["case"] == two["case"] == "ct" and one["task"] == "lung tumor"
    for key in ("native_dice", "native_nsd", "resampled_dice", "native_pred_voxels"):
        assert float(two[key]) == pytest.approx(float(one[key]), rel=1e-3), key


def test_a_second_run_into_a_folder_in_use_stops_at_once(case, tmp_path):
    out = tmp_path / "shared"
    holder = OutputFolder(out)
    holder.claim()  # this test process is the first run
    try:
        began = time.perf_counter()
        done = run_workflow("inference", *TINY, "--input", case["image"], "--output_dir", out, "--ckpt_path",
                            case["weights"], "--modality", "ct")
    finally:
        holder.release()
    assert done.returncode == 1
    error = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert error == [f"error: --output_dir {out} is in use by another run (pid {os.getpid()}); wait for it to "
                     "finish or choose another --output_dir"]
    assert "[1/1]" not in done.stdout and time.perf_counter() - began < 120
    assert sorted(p.name for p in out.iterdir()) == [".hermes.lock"]


@pytest.mark.parametrize("where", ["proc", "file"])
def test_an_output_folder_that_cannot_be_written_is_found_before_any_case(case, tmp_path, where):
    out = Path("/proc/hermes_cannot_write_here") if where == "proc" else tmp_path / "a_file"
    if where == "file":
        out.write_text("a user's file")
    done = run_workflow_in_process("inference", *TINY, "--input", case["image"], "--output_dir", out, "--ckpt_path",
                                   case["weights"], "--modality", "ct")
    assert done.returncode == 1 and "[1/1]" not in done.stdout
    expected = "is a file, not a folder" if where == "file" else "cannot be written"
    assert f"error: --output_dir {out} {expected}" in done.stdout
    if where == "file":
        assert out.read_text() == "a user's file"


def test_ctrl_c_ends_with_a_summary_and_skip_existing_finishes_the_batch(case, tmp_path):
    """Ctrl-C after the first of six cases: a summary, exit status 130, finished cases complete and nothing
    half-written; then ``--skip_existing true`` finishes the batch.

    The signal is sent when the first case's line is read; on a loaded machine it may land a case or more later, so
    the batch is long enough (five cases still to go) for it to land inside, and the checks follow what the summary
    says was finished. Cases not yet run cost nothing."""
    names = ["a", "b", "c", "d", "e", "f"]
    batch = tmp_path / "batch"
    batch.mkdir()
    for name in names:
        (batch / f"{name}.nii.gz").write_bytes(case["image"].read_bytes())
    out = tmp_path / "out"
    args = [*TINY, "--input", batch, "--output_dir", out, "--ckpt_path", case["weights"], "--modality", "ct",
            "--tasks", "liver", "--save_task_masks", "true"]
    process = start_workflow("inference", *args)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("[1/6] done"):
                process.send_signal(signal.SIGINT)
                break
        stdout = "".join(lines) + process.stdout.read()
        stderr = process.stderr.read()
        assert process.wait(timeout=120) == 130, stdout[-2000:] + stderr[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
    summary = re.search(r"Summary: (\d+) done, 0 already complete, 0 failed, (\d+) not run \(interrupted\)", stdout)
    assert summary, stdout[-2000:]
    done, not_run = int(summary[1]), int(summary[2])
    assert done >= 1 and not_run >= 1 and done + not_run == len(names)
    assert "to continue: run the same command again with --skip_existing true" in stdout
    assert "Traceback" not in stdout + stderr
    finished = names[:done]  # cases run in order: the interrupted one left nothing behind
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        f"{name}{suffix}" for name in finished for suffix in ("_seg.json", "_seg.nii.gz", "_task-liver.nii.gz"))
    assert not list(out.glob(".staging.*"))
    resumed = run_workflow_in_process("inference", *args, "--skip_existing", "true")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"Summary: {not_run} done, {done} already complete, 0 failed" in resumed.stdout
    for name in names:
        assert json.loads((out / f"{name}_seg.json").read_text())["task_masks"] == {"1": f"{name}_task-liver.nii.gz"}


def test_degenerate_affine_and_label_map_as_image_are_named(case, tmp_path):
    image = nib.load(case["image"])
    flat = nib.Nifti1Image(np.asarray(image.dataobj), np.eye(4))
    flat.set_qform(None, code=0)
    flat.set_sform(np.zeros((4, 4)), code=1)  # an all-zero affine, as some converters write
    nib.save(flat, tmp_path / "flat_affine.nii.gz")
    labels = (np.asarray(image.dataobj) > 0).astype(np.uint8)
    save_nifti(tmp_path / "mask_as_image.nii.gz", labels, image.affine)
    done = run_workflow_in_process("inference", *TINY, "--input", tmp_path, "--output_dir", tmp_path / "out",
                                   "--ckpt_path", case["weights"], "--modality", "ct", "--tasks", "liver")
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "flat_affine.nii.gz: the header's sform (code 1) is all zeros or degenerate" in failed[0]
    assert (f"warning: {tmp_path / 'mask_as_image.nii.gz'}: the image holds only a few integer values; is it a label "
            "map rather than a scan?") in done.stderr
    assert "Summary: 1 done, 0 already complete, 1 failed" in done.stdout
