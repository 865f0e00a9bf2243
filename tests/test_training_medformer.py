"""Hermes-M through the real workflows with the overlay configs/hermes_m.json, as a user types them: a short run that
resumes and exports, and inference with the exported weights on a real sample CT (no backbone flag anywhere). That
Hermes-M learns is tested in test_learning_medformer.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import BUNDLE_ROOT, run_workflow_in_process
from test_training import TINY, load

M_CONFIGS = ("configs/train.json", "configs/hermes_m.json")


def train_m(phantoms: dict, runs: Path, name: str, *overrides: str):
    return run_workflow_in_process("training", "--datalist", phantoms["datalist"], "--runs_root", runs, "--run_name",
                                   name, *TINY, *overrides, configs=M_CONFIGS, expect_ok=True)


def config_network(phantoms: dict) -> torch.nn.Module:
    """The network the overlay builds (Hermes-M, release depth, base 8) for the phantoms' task list."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / c) for c in M_CONFIGS])
    parser.update({"datalist": phantoms["datalist"], "base_channels": 8})
    return parser.get_parsed_content("network_def")


def test_check_properties_of_train_config_with_the_overlay(tmp_path: Path, phantoms: dict,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(BUNDLE_ROOT)
    workflow = ConfigWorkflow(config_file=[str(BUNDLE_ROOT / c) for c in M_CONFIGS], workflow_type="train",
                              datalist=phantoms["datalist"], runs_root=str(tmp_path), run_name="props", base_channels=8)
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.parser.get_parsed_content("loss").deep_supervision_weights == [0.5, 0.5]
    assert workflow.parser.get_parsed_content("optimizer").defaults["weight_decay"] == 0.05


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, phantoms: dict) -> dict:
    """One epoch of two iterations, then the same run resumed to two epochs and exported to a weights file."""
    runs = tmp_path_factory.mktemp("m") / "runs"
    train_m(phantoms, runs, "m", "--max_epochs", "1", "--iterations_per_epoch", "2")
    first = load(runs / "m" / "latest.pt")
    exported = runs.parent / "models" / "model.pt"
    done = train_m(phantoms, runs, "m", "--max_epochs", "2", "--iterations_per_epoch", "2", "--resume", "true",
                   "--export_to_bundle", "true", "--export_path", str(exported))
    return {"runs": runs, "first": first, "log": done.stdout + done.stderr, "exported": exported}


def test_overlay_run_resumes_and_exports_hermes_m_weights(resumed: dict, phantoms: dict,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts.networks import HermesMedFormer
    from scripts.weights import backbone_of_weights

    monkeypatch.chdir(BUNDLE_ROOT)

    run_dir = resumed["runs"] / "m"
    assert f"resumed {run_dir / 'latest.pt'} at epoch 1, iteration 2" in resumed["log"]
    final = load(run_dir / "final.pt")
    assert (final["epoch"], final["iteration"]) == (2, 4), "training restarted instead of continuing"
    first = resumed["first"]["model_state_dict"]
    assert any(not torch.equal(v, final["model_state_dict"][k]) for k, v in first.items() if v.is_floating_point())
    network = config_network(phantoms)
    assert isinstance(network, HermesMedFormer)
    network.load_state_dict(final["ema_model_state_dict"])  # strict: the overlay's network, keys and shapes
    weights = load(resumed["exported"])
    assert all(torch.equal(v, final["ema_model_state_dict"][k]) for k, v in weights.items())
    assert backbone_of_weights(resumed["exported"]) == "m" and backbone_of_weights(run_dir / "latest.pt") == "m"


def test_inference_with_hermes_m_weights_on_a_sample_ct(resumed: dict, sample_suite: dict, tmp_path: Path) -> None:
    """configs/inference.json alone: the exported weights make it build Hermes-M; outputs land on the input's grid."""
    scan = nib.load(Path(sample_suite["root"]) / "sample_lung_ct" / "lung1_image.nii.gz")
    block = (slice(200, 264), slice(200, 264), slice(20, 32))
    affine = scan.affine.copy()
    affine[:3, 3] = scan.affine[:3, :3] @ np.array([200, 200, 20]) + scan.affine[:3, 3]
    nib.save(nib.Nifti1Image(np.asarray(scan.dataobj[block]), affine), tmp_path / "ct.nii.gz")
    done = run_workflow_in_process("inference", "--input", tmp_path / "ct.nii.gz", "--output_dir", tmp_path / "out",
                                   "--ckpt_path", resumed["exported"], "--base_channels", "8", "--roi_size",
                                   "[32,32,32]", "--modality", "ct", "--tasks", "synthetic ellipsoid organ,liver",
                                   expect_ok=True)  # a NIfTI says no modality; the 4-step head may guess
    assert "Summary: 1 done, 0 already complete, 0 failed" in done.stdout
    output = nib.load(tmp_path / "out" / "ct_seg.nii.gz")
    assert output.shape == scan.dataobj[block].shape
    np.testing.assert_allclose(output.affine, affine, atol=1e-4)
    sidecar = json.loads((tmp_path / "out" / "ct_seg.json").read_text())
    assert sidecar["weights"]["path"] == str(resumed["exported"].resolve())
    assert sidecar["modality"]["name"] == "ct"
    assert [sidecar["labels"][k]["name"] for k in ("1", "2")] == ["synthetic ellipsoid organ", "liver"]
