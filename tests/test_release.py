"""The release archive and the published weights, the Model Zoo way, as a new user types it.

``python -m scripts.release`` builds the zip; ``python -m monai.bundle download --url file://...`` unpacks it far from
this repository; ``large_files.yml`` of that copy is pointed at a checkpoint in the PUBLISHED layout served from a
``file://`` URL; ``python -m monai.bundle download_large_files`` lands it at ``models/model.pt``; the copy then
segments a real sample-suite CT and fine-tunes (``--finetune true``) from that file as it is. The failures on the way
(no gdown, Drive quota, a download that stops, a half-downloaded or missing file) are each one line saying what to do.

The published-format checkpoint is a tiny Hermes-R (base 4) with the registry's task and modality counts, its tensors
renamed to the authors' module names with the names of the reference fixture (the published layout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from conftest import BUNDLE_ROOT, REPO_ROOT
from scripts.checkpoint_names import published_to_bundle_name
from scripts.download_weights import download_weights
from scripts.errors import HermesError, SetupError
from scripts.io.checkpoints import CheckpointError
from scripts.networks.hermes import HermesResUNet
from scripts.registry import TaskRegistry
from scripts.release import BUNDLE_NAME, build_release
from scripts.networks.rows import grown_rows
from scripts.weights import backbone_of_weights, load_weights, read_weights_file

DRIVE_URL = "https://drive.google.com/file/d/1s3Rc5zpgNz9FA2eqKBExaXQ_nsbAPMT8/view?usp=sharing"
TINY = ["--base_channels", "4", "--roi_size", "[32,32,32]"]
#: Subprocesses see only the downloaded copy: no PYTHONPATH into this repository.
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONWARNINGS": "ignore",
       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def run(command: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def tiny_network(seed: int = 0) -> HermesResUNet:
    registry = TaskRegistry.load(BUNDLE_ROOT / "configs" / "task_registry.json")
    torch.manual_seed(seed)
    return HermesResUNet(in_channels=1, base_channels=4, num_tasks=registry.num_tasks,
                         num_modalities=registry.num_modalities, modality_tokens=10)


@pytest.fixture(scope="module")
def published(shared_fixtures: Path, tmp_path_factory) -> Path:
    """A tiny Hermes-R saved in the published checkpoint layout (the authors' module names and keys)."""
    checkpoint = shared_fixtures / "hermes_reference" / "hermes_reference_checkpoint.pth"
    reference = torch.load(checkpoint, weights_only=True)["ema_model_state_dict"]
    published_name = {published_to_bundle_name(name): name for name in reference}
    own = tiny_network().state_dict()
    assert set(own) == set(published_name), "the reference fixture no longer names every Hermes-R tensor"
    weights = {}
    for name, tensor in own.items():  # a Linear weight the authors hold as a 1x1x1 convolution kernel gets its 1s back
        extra = reference[published_name[name]].ndim - tensor.ndim
        weights[published_name[name]] = tensor.reshape(*tensor.shape, *([1] * extra))
    path = tmp_path_factory.mktemp("published") / "hermes_resunet_published.pth"
    torch.save({"epoch": 200, "model_state_dict": weights, "ema_model_state_dict": weights,
                "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)
    return path


@pytest.fixture(scope="module")
def small_ct(sample_suite: dict, tmp_path_factory) -> Path:
    """A 64 x 64 x 12 block of the real sample-suite lung CT, kept where it was."""
    scan = nib.load(Path(sample_suite["root"]) / "sample_lung_ct" / "lung1_image.nii.gz")
    affine = scan.affine.copy()
    affine[:3, 3] = scan.affine[:3, :3] @ np.array([200, 200, 20]) + scan.affine[:3, 3]
    path = tmp_path_factory.mktemp("ct") / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(scan.dataobj[200:264, 200:264, 20:32]), affine), path)
    return path


def point_manifest_at(bundle: Path, url: str) -> None:
    manifest = yaml.safe_load((bundle / "large_files.yml").read_text())
    manifest["large_files"][0]["url"] = url
    (bundle / "large_files.yml").write_text(yaml.safe_dump(manifest))


# ------------------------------------------------------------------------------------ the whole way, as a user
def test_release_download_weights_segment_and_finetune(published: Path, small_ct: Path, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = run([sys.executable, "-m", "scripts.release", "--output_dir", str(dist)], cwd=BUNDLE_ROOT)
    version = json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text())["version"]
    archive = dist / f"{BUNDLE_NAME}_v{version}.zip"
    assert f"wrote {archive}" in built.stdout
    with zipfile.ZipFile(archive) as handle:
        names = handle.namelist()
    assert all(name.startswith(f"{BUNDLE_NAME}/") for name in names)
    for required in ("LICENSE", "large_files.yml", "docs/data_license.txt", "docs/README.md", "configs/metadata.json",
                     "configs/inference.json", "configs/train.json", "scripts/__init__.py", "scripts/weights.py"):
        assert f"{BUNDLE_NAME}/{required}" in names, required
    assert not [n for n in names if any(part in n.split("/") for part in ("__pycache__", "runs", "eval", "mlruns"))
                or n.split("/")[-1].startswith(".") or n.endswith((".pyc", ".tmp", ".lock"))]

    # the Model Zoo's download, into an empty folder far from this repository
    users = tmp_path / "user"
    users.mkdir()
    run([sys.executable, "-m", "monai.bundle", "download", "--name", BUNDLE_NAME, "--url", archive.as_uri(),
         "--bundle_dir", str(users / "bundles")], cwd=users)
    bundle = users / "bundles" / BUNDLE_NAME
    assert (bundle / "configs" / "metadata.json").is_file() and not (bundle / "models" / "model.pt").exists()
    manifest = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]
    assert manifest[0]["path"] == "models/model.pt" and manifest[0]["url"] == DRIVE_URL

    # the published weights, served from a file:// URL instead of Google Drive
    point_manifest_at(bundle, published.as_uri())
    run([sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", "."], cwd=bundle)
    assert (bundle / "models" / "model.pt").read_bytes() == published.read_bytes()

    # inference from the downloaded copy reads the published format at models/model.pt directly
    done = run([sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.json",
                "--input", str(small_ct), "--output_dir", str(users / "out"), *TINY, "--modality", "ct",
                "--tasks", "liver"], cwd=bundle)
    assert "Summary: 1 done, 0 already complete, 0 failed" in done.stdout
    output = nib.load(users / "out" / "ct_seg.nii.gz")
    assert output.shape == (64, 64, 12)
    np.testing.assert_allclose(output.affine, nib.load(small_ct).affine, atol=1e-4)
    sidecar = json.loads((users / "out" / "ct_seg.json").read_text())
    assert sidecar["weights"]["path"] == str((bundle / "models" / "model.pt").resolve())
    assert sidecar["weights"]["kind"] == "published checkpoint (ema_model_state_dict), converted"

    # fine-tuning from the same file (its default path), the sample suite adding tasks 72-82 to the tables
    done = run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
                "--finetune", "true", *TINY, "--spacing", "[4,4,4]", "--iterations_per_epoch", "1", "--batch_size", "1",
                "--val_overlap", "0", "--sw_batch_size", "4", "--block_margin", "0", "--affine_prob", "0",
                "--runs_root", str(users / "runs"), "--run_name", "ft"], cwd=bundle)
    log = done.stdout + done.stderr
    assert "fine-tuning starts from" in log and "task prior tables grown from 72 to 83 tasks" in log, log[-3000:]
    final = torch.load(users / "runs" / "ft" / "final.pt", weights_only=True)["model_state_dict"]
    start = torch.load(published, weights_only=True)["ema_model_state_dict"]
    assert final["fusion.0.task_prior"].shape == (84, 16)
    # tasks the batch never drew keep their published rows (LAMB's weight decay aside, one step moves them little)
    assert torch.allclose(final["fusion.0.task_prior"][40], start["prior_init_fuse_2.task_prior"][40], atol=1e-2)


# ------------------------------------------------------------------------------------------- the archive's rules
def test_archive_refuses_large_files_and_never_overwrites(tmp_path: Path) -> None:
    bundle = tmp_path / BUNDLE_NAME
    for name in ("configs", "scripts", "docs"):
        (bundle / name).mkdir(parents=True)
    for name in ("configs/metadata.json", "configs/inference.json", "docs/README.md", "docs/data_license.txt",
                 "LICENSE", "large_files.yml"):
        (bundle / name).write_text("{\"version\": \"9.9.9\"}" if name.endswith("metadata.json") else "x")
    (bundle / "scripts" / "__pycache__").mkdir()
    (bundle / "scripts" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    (bundle / "scripts" / ".notes.swp").write_text("personal")
    (bundle / "scripts" / "a.py").write_text("print(1)")
    (bundle / "models").mkdir()
    (bundle / "models" / ".model.pt.123.abc.tmp.pt").write_bytes(b"staging")
    (bundle / "models" / "model.pt").write_bytes(b"not really weights")
    (bundle / "models" / "model.tasks.json").write_text("{}")
    (bundle / "runs" / "r").mkdir(parents=True)
    (bundle / "runs" / "r" / "latest.pt").write_bytes(b"x")
    (bundle / "eval").mkdir()
    built = build_release(bundle, tmp_path / "dist")
    with zipfile.ZipFile(built["path"]) as handle:
        names = sorted(handle.namelist())
    assert built["path"].name == f"{BUNDLE_NAME}_v9.9.9.zip"
    assert names == sorted(f"{BUNDLE_NAME}/{n}" for n in (
        "configs/metadata.json", "configs/inference.json", "docs/README.md", "docs/data_license.txt", "LICENSE",
        "large_files.yml", "scripts/a.py", "models/model.pt", "models/model.tasks.json"))
    assert "runs/" in built["left_out"] and "eval/" in built["left_out"]
    with pytest.raises(SetupError, match="already exists; pass --overwrite true"):
        build_release(bundle, tmp_path / "dist")
    before = built["path"].read_bytes()
    (bundle / "docs" / "figure.bin").write_bytes(b"\0" * 25_000_001)
    with pytest.raises(SetupError, match=r"files over 25 MB outside models/ .*docs/figure.bin \(25.0 MB\)"):
        build_release(bundle, tmp_path / "dist", overwrite=True)
    assert built["path"].read_bytes() == before, "a refused build must leave the existing archive alone"
    (bundle / "docs" / "figure.bin").unlink()
    (bundle / "LICENSE").unlink()
    with pytest.raises(SetupError, match="not a complete bundle: missing LICENSE"):
        build_release(bundle, tmp_path / "dist2")
    assert not (tmp_path / "dist2").exists() or not list((tmp_path / "dist2").iterdir())


def test_archive_points_at_the_published_checkpoint_instead_of_shipping_it(published: Path, tmp_path: Path) -> None:
    bundle = tmp_path / BUNDLE_NAME
    for name in ("configs/metadata.json", "configs/inference.json", "docs/README.md", "docs/data_license.txt",
                 "LICENSE", "large_files.yml"):
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_text("{\"version\": \"1.0.0\"}" if name.endswith("metadata.json") else "x")
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(published.read_bytes())
    built = build_release(bundle, tmp_path / "dist")
    assert not [p for p in built["files"] if p.parts[0] == "models"]
    assert any("the published checkpoint" in line for line in built["left_out"])
    built = build_release(bundle, tmp_path / "dist", overwrite=True, include_published=True)
    assert Path("models/model.pt") in built["files"]


def test_the_bundle_folder_ships_what_the_model_zoo_requires() -> None:
    for name in ("LICENSE", "docs/data_license.txt", "large_files.yml", "configs/metadata.json"):
        assert (BUNDLE_ROOT / name).is_file(), name
    assert (BUNDLE_ROOT / "LICENSE").read_text() == (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in (BUNDLE_ROOT / "LICENSE").read_text()
    metadata = json.loads((BUNDLE_ROOT / "configs" / "metadata.json").read_text())
    gdown_pin = metadata["optional_packages_version"]["gdown"]
    assert f"gdown=={gdown_pin}" in (REPO_ROOT / "requirements-weights.txt").read_text()
    assert "gdown" not in (REPO_ROOT / "requirements.txt").read_text()


# ------------------------------------------------------------------------------------- the load path's lines
def test_load_path_says_what_to_run_when_weights_are_missing_or_half_downloaded(
        published: Path, tmp_path: Path) -> None:
    network = tiny_network()
    missing = tmp_path / "models" / "model.pt"
    with pytest.raises(SetupError) as caught:
        load_weights(network, missing)
    line = str(caught.value)
    assert "\n" not in line and f"no model weights at {missing}" in line
    for hint in ("python -m monai.bundle download_large_files --bundle_path .", "python -m scripts.download_weights",
                 "python -m monai.bundle run training", "--ckpt_path"):
        assert hint in line, hint
    assert backbone_of_weights(missing) == "r"  # configs still resolve before the weights exist

    missing.parent.mkdir(parents=True)
    missing.write_bytes(published.read_bytes()[: published.stat().st_size // 2])
    for attempt in (lambda: load_weights(network, missing), lambda: backbone_of_weights(missing)):
        with pytest.raises(CheckpointError) as caught:
            attempt()
        line = str(caught.value)
        assert "\n" not in line and line.startswith(f"{missing}: not a PyTorch checkpoint")
        for hint in ("truncated", f"{published.stat().st_size // 2:,} bytes", "delete it and download again",
                     "python -m scripts.download_weights", "in a browser", "Getting the weights"):
            assert hint in line, hint

    missing.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>")
    with pytest.raises(CheckpointError, match="a web page .* delete it and download again"):
        read_weights_file(missing)

    missing.write_bytes(published.read_bytes())
    assert load_weights(network, missing).kind == "published checkpoint (ema_model_state_dict), converted"


def test_task_tables_grow_for_added_tasks_and_keep_every_published_row(tmp_path: Path) -> None:
    held = torch.arange(6.0).reshape(3, 2)  # two tasks + the null row
    target = torch.full((5, 2), -1.0)  # four tasks + the null row
    grown = grown_rows("fusion.0.task_prior", held, target)
    assert torch.equal(grown[:2], held[:2]) and torch.equal(grown[-1], held[-1])
    assert torch.equal(grown[2:4], target[2:4])
    assert grown_rows("fusion.0.blocks.0.prior_mlp.fc1.weight", held, target) is held  # no per-task rows
    assert grown_rows("fusion.0.task_prior", target, held) is target  # never shrunk: a clear misfit instead
    torch.save(tiny_network().state_dict(), tmp_path / "w.pt")  # 72 tasks cannot go into a 5-task network
    with pytest.raises(CheckpointError, match="73 task rows .* gives the network only 6"):
        load_weights(HermesResUNet(base_channels=4, num_tasks=5, num_modalities=6), tmp_path / "w.pt",
                     grow_task_tables=True)


# ------------------------------------------------------------------------------------------ the wrapper's lines
def manifest_bundle(folder: Path, url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "large_files.yml").write_text(yaml.safe_dump(
        {"large_files": [{"path": "models/model.pt", "url": url, "hash_val": "", "hash_type": ""}]}))
    return folder


def failure_of(bundle: Path) -> str:
    with pytest.raises(HermesError) as caught:
        download_weights(bundle)
    line = str(caught.value)
    assert "\n" not in line, line
    return line


def test_wrapper_fetches_and_checks_the_landed_file(published: Path, tmp_path: Path) -> None:
    bundle = manifest_bundle(tmp_path / "b", published.as_uri())
    (described,) = download_weights(bundle)
    assert (bundle / "models" / "model.pt").read_bytes() == published.read_bytes()
    assert "published checkpoint (ema_model_state_dict), converted" in described
    assert "loads into Hermes-R (base 4, 72 task rows, 6 modalities)" in described and "--base_channels 4" in described


def test_wrapper_lines_for_gdown_missing_quota_stopped_and_unreachable(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import monai.apps.utils as monai_download

    bundle = manifest_bundle(tmp_path / "drive", DRIVE_URL)
    target = bundle / "models" / "model.pt"
    monkeypatch.setattr(monai_download, "has_gdown", False)
    line = failure_of(bundle)
    for hint in ("needs the optional package gdown", "pip install gdown", "requirements-weights.txt", DRIVE_URL,
                 f"save it as {target}", "python -m scripts.convert_checkpoint SRC DST"):
        assert hint in line, hint

    class FileURLRetrievalError(Exception):  # gdown.exceptions names, gdown 6 messages
        pass

    class DownloadError(Exception):
        pass

    def refusing(message: str, error: type) -> types.SimpleNamespace:
        def download(*args, **kwargs):
            raise error(message)
        return types.SimpleNamespace(__version__="6.5.1", download=download)

    monkeypatch.setattr(monai_download, "has_gdown", True)
    quota = ("Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file recently. Please\n"
             "\ttry accessing the file again later. If the file you are trying to access is particularly large or is"
             "\n\tshared with many people, it may take up to 24 hours to be able to view or download the file.\n\n"
             f"You may still be able to access the file from the browser:\n\n\t{DRIVE_URL}\n\nbut Gdown can't.")
    monkeypatch.setattr(monai_download, "gdown", refusing(quota, FileURLRetrievalError))
    line = failure_of(bundle)
    for hint in ("Google Drive refused", "quota", "Too many users", "wait", "in a browser", f"save it as {target}",
                 "Baidu"):
        assert hint in line, hint
    monkeypatch.setattr(monai_download, "gdown",
                        refusing("Response ends before the announced number of bytes", DownloadError))
    line = failure_of(bundle)
    assert "stopped part way" in line and f"nothing was written to {target}" in line and "run this again" in line
    assert not target.exists()

    gone = manifest_bundle(tmp_path / "gone", (tmp_path / "nowhere.pth").as_uri())
    line = failure_of(gone)
    assert line.startswith(f"could not download {(tmp_path / 'nowhere.pth').as_uri()}") and "in a browser" in line
    with pytest.raises(SetupError, match="no large_files.yml in .*: run this from the bundle folder"):
        download_weights(tmp_path)


def test_wrapper_names_a_half_downloaded_file_that_monai_skips(published: Path, tmp_path: Path) -> None:
    bundle = manifest_bundle(tmp_path / "b", published.as_uri())
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(published.read_bytes()[:100_000])
    line = failure_of(bundle)
    assert "truncated" in line and "100,000 bytes" in line and "delete it and download again" in line
