"""The typed case pipeline (scripts/cases) on real scans: the same label maps as the pipeline it replaced, background
workers that keep the order and the failure isolation of a batch, ``torchrun`` ranks that write each case once, and
the settings a user can get wrong refused in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import run_workflow, run_workflow_in_process
from test_inference_runs import crop, run_in_process, save_nifti, tilted

REFERENCE = Path(__file__).parent / "data" / "case_pipeline_reference"
WEIGHTS = REFERENCE / "weights_base2_fp16.pt"
BASE2 = {"base_channels": 2, "roi_size": [32, 32, 32]}


@pytest.fixture(scope="module")
def blocks(sample_suite, tmp_path_factory) -> dict[str, Path]:
    """The reference's inputs: a lung CT block, the same block stored oblique, a brain T1 block (NIfTI)."""
    root, folder = Path(sample_suite["root"]), tmp_path_factory.mktemp("blocks")
    ct, ct_affine = crop(root / "sample_lung_ct" / "lung1_image.nii.gz", (200, 200, 16), (96, 80, 12))
    mr, mr_affine = crop(root / "sample_brain_t1" / "brain1_image.nii.gz", (90, 90, 8), (80, 72, 10))
    (folder / "ct").mkdir()
    (folder / "mr").mkdir()
    return {
        "ct": save_nifti(folder / "ct" / "lung_crop.nii.gz", ct, ct_affine).parent,
        "oblique": save_nifti(folder / "ct" / "lung_oblique.nii.gz", ct, tilted(ct_affine, ct.shape)),
        "mr": save_nifti(folder / "mr" / "brain_crop.nii.gz", mr, mr_affine).parent,
        "one": save_nifti(folder / "lung_small.nii.gz", ct[:48, :48, :8], ct_affine),
    }


def _voxels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_label_maps_equal_the_replaced_pipeline_on_cpu(blocks, tmp_path):
    """Every label map (and every mask of the brain block) voxel for voxel as the pipeline before the redesign wrote
    it, on an axis-aligned and an oblique CT and an MRI, with the default task selection (6 CT contexts). The runs use
    2 torch threads, as the reference did: float sums split over another number of threads round differently (on 1
    thread one near-tie voxel of 92,160 flips), whatever the machine's cores."""
    for folder, modality in ((blocks["ct"], "ct"), (blocks["mr"], "t1")):
        done = run_workflow_in_process("inference", env={"OMP_NUM_THREADS": "2"}, **BASE2, input=str(folder),
                                       output_dir=str(tmp_path / modality), ckpt_path=str(WEIGHTS), modality=modality,
                                       save_task_masks=modality == "t1")
        assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    references = sorted(REFERENCE.glob("*.nii.gz"))
    assert len(references) == 10
    for reference in references:
        written = tmp_path / ("t1" if reference.name.startswith("brain") else "ct") / reference.name
        assert np.array_equal(_voxels(written), _voxels(reference)), reference.name
        np.testing.assert_allclose(nib.load(written).affine, nib.load(reference).affine, atol=1e-6)
    assert (_voxels(tmp_path / "ct" / "lung_oblique_seg.nii.gz") > 0).sum() > 1000  # a real map, not empty


def _outcomes(text: str) -> list[tuple[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("[")]
    return [(line.split()[1], Path(line.split()[2]).name) for line in lines]


def test_background_workers_keep_the_order_the_outputs_and_a_bad_case_alone(blocks, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = _voxels(blocks["one"])
    affine = nib.load(blocks["one"]).affine
    for name in ("a_good", "c_good", "e_good"):
        save_nifti(inputs / f"{name}.nii.gz", good, affine)
    (inputs / "b_broken.nii.gz").write_bytes(blocks["one"].read_bytes()[:5000])  # truncated
    save_nifti(inputs / "d_empty.nii.gz", np.zeros((48, 48, 0), np.float32), affine)
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"out{workers}"
        status, text = run_in_process(**BASE2, input=str(inputs), output_dir=str(out), ckpt_path=str(WEIGHTS),
                                      modality="ct", tasks="liver,spleen", workers=workers, save_probabilities=True)
        assert status == 1 and "Summary: 3 done, 0 already complete, 2 failed" in text, text[-3000:]
        runs[workers] = (out, text)
    assert _outcomes(runs[0][1]) == _outcomes(runs[2][1]) == [
        ("done", "a_good.nii.gz"), ("FAILED", "b_broken.nii.gz"), ("done", "c_good.nii.gz"),
        ("FAILED", "d_empty.nii.gz"), ("done", "e_good.nii.gz")]
    assert "d_empty.nii.gz: image has no voxels (size 48 x 48 x 0 in its header)" in runs[2][1]
    names = sorted(p.name for p in runs[0][0].iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in runs[2][0].iterdir() if not p.name.startswith("."))
    for name in names:
        if name.endswith(".nii.gz"):
            assert np.array_equal(_voxels(runs[0][0] / name), _voxels(runs[2][0] / name)), name


def test_profile_compression_and_label_inversion(blocks, tmp_path):
    common = {**BASE2, "input": str(blocks["one"]), "ckpt_path": str(WEIGHTS), "modality": "ct", "tasks": "liver"}
    status, text = run_in_process(**common, output_dir=str(tmp_path / "fast"), profile=True)
    assert status == 0 and "Profile (seconds summed over this process's cases): read " in text, text[-2000:]
    sidecar = json.loads((tmp_path / "fast" / "lung_small_seg.json").read_text())
    assert list(sidecar["profile_seconds"]) == ["read", "resample", "modality", "windows", "invert"]
    assert all(value >= 0 for value in sidecar["profile_seconds"].values())
    status, text = run_in_process(**common, output_dir=str(tmp_path / "default"), compression="default")
    assert status == 0
    fast, default = tmp_path / "fast" / "lung_small_seg.nii.gz", tmp_path / "default" / "lung_small_seg.nii.gz"
    assert fast.read_bytes()[:2] == default.read_bytes()[:2] == b"\x1f\x8b"  # both gzip
    assert np.array_equal(_voxels(fast), _voxels(default))
    status, text = run_in_process(**common, output_dir=str(tmp_path / "labels"), invert="labels")
    assert status == 0 and json.loads((tmp_path / "labels" / "lung_small_seg.json").read_text())["settings"][
        "invert"] == "labels"
    by_labels = _voxels(tmp_path / "labels" / "lung_small_seg.nii.gz")
    assert by_labels.shape == _voxels(fast).shape and set(np.unique(by_labels)) <= {0, 1}


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("threshold", 2, "--threshold: expected a probability between 0 and 1 (exclusive), got 2.0"),
    ("invert", "nearest", "--invert: expected one of probabilities, labels, got 'nearest'"),
    ("compression", "zip", "--compression: expected one of fast, default, got 'zip'"),
    ("workers", -1, "--workers: expected 0 or more, got -1"),
    ("roi_size", [40, 40, 40], "--roi_size [40, 40, 40]: expected three window sides, each a positive multiple of 16 "
                               "(the network's total down-sampling); the nearest that fits: [48, 48, 48]"),
    ("roi_size", 48, "--roi_size 48: expected three window sides"),  # a TypeError from deep inside before
    # these failed every case, after reading it: MONAI checks the window settings per call, a zero spacing divided
    ("overlap", 1, "--overlap: expected the windows' overlap, a fraction in [0, 1), got 1"),
    ("sw_batch_size", 0, "--sw_batch_size: expected 1 or more windows per network call, got 0"),
    ("spacing", [0, 0, 0], "--spacing [0, 0, 0]: expected the voxel size in mm, one positive number or three"),
    ("spacing", [1, 1], "--spacing [1, 1]: expected the voxel size in mm"),  # was padded to [1, 1, 1] silently
])
def test_bad_settings_are_refused_before_any_case(blocks, tmp_path, setting, value, message):
    status, text = run_in_process(**{**BASE2, setting: value}, input=str(blocks["one"]), output_dir=str(tmp_path / "out"),
                                  ckpt_path=str(WEIGHTS), modality="ct", tasks="liver")
    assert status == 1 and f"error: {message}" in text, text[-2000:]
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_a_case_too_large_for_the_memory_is_refused_with_what_to_do(blocks, tmp_path):
    from scripts.cases.read import CaseReader, estimated_host_bytes, source_header
    from scripts.errors import CaseError

    assert estimated_host_bytes((1024, 1024, 800), (1.0, 1.0, 1.0), (1.5, 1.5, 1.5), 60, 4) > 12 * 1024**3
    reader = CaseReader(load=None, to_grid=None, modality=None, normalize=None, channels=60,
                        available=lambda: 1024**3)
    big = tmp_path / "big.nii"
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((1024, 1024, 800))
    header.set_zooms((1.0, 1.0, 1.0))
    with open(big, "wb") as handle:  # the header alone: the estimate must not need the voxels
        header.write_to(handle)
    with pytest.raises(CaseError, match=r"big.nii: a 1024x1024x800 volume needs about \d+\.\d GiB of memory here "
                                        r"and 1.0 GiB is available; run it on a GPU, ask for fewer --tasks"):
        case = {"source": str(big), "image": str(big), "format": "nifti"}
        reader.check_memory(case, source_header(case))


def test_an_all_zero_sform_is_refused(blocks, tmp_path):
    image = nib.load(blocks["one"])
    broken = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
    broken.set_sform(np.zeros((4, 4)), code=1)
    path = tmp_path / "zero_sform.nii.gz"
    nib.save(broken, path)
    status, text = run_in_process(**BASE2, input=str(path), output_dir=str(tmp_path / "out"),
                                  ckpt_path=str(WEIGHTS), modality="ct", tasks="liver")
    assert status == 1 and "zero_sform.nii.gz: the header's sform (code 1) is all zeros or degenerate" in text


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available in this build")
def test_torchrun_shares_the_cases_and_writes_each_once(blocks, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good, affine = _voxels(blocks["one"]), nib.load(blocks["one"]).affine
    for k in range(3):
        save_nifti(inputs / f"case{k}.nii.gz", good, affine)
    (inputs / "case3.nii.gz").write_bytes(b"not a nifti")
    done = run_workflow("inference", "--base_channels", "2", "--roi_size", "[32,32,32]", "--input", inputs,
                        "--output_dir", tmp_path / "out", "--ckpt_path", WEIGHTS, "--modality", "ct", "--tasks",
                        "liver", launcher=(sys.executable, "-m", "torch.distributed.run", "--standalone",
                                           "--nproc_per_node=2", "-m"), env={"OMP_NUM_THREADS": "1"})
    log = done.stdout + done.stderr
    assert done.returncode != 0, log[-3000:]  # one case failed: the run fails, on both ranks
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert sorted(Path(line.split()[2]).name for line in lines) == [f"case{k}.nii.gz" for k in range(4)], log[-3000:]
    assert done.stdout.count("Summary: 3 done, 0 already complete, 1 failed") == 1, log[-3000:]
    assert "rank 0 of 2" in done.stdout and "rank 1 of 2" in done.stdout
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert written == sorted(f"case{k}_seg{s}" for k in range(3) for s in (".json", ".nii.gz"))
