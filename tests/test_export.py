"""Export for serving (``python -m scripts.export``): the ONNX model and the ``torch.export`` program compute what the
eager network computes, for other task counts and window sizes than the ones the command checked itself; outputs are
never overwritten unasked; bad input is one line.

One command run exports a tiny network (base width 4) in both formats with a 32³ self-check (the command's default
check is 128³); on 2 CPU cores tracing and ONNX conversion take about a minute whatever the width.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts import export as hermes_export
from scripts.errors import SetupError
from scripts.networks import HermesResUNet
from scripts.io.checkpoints import CheckpointError
from scripts.weights import HOW_TO_GET_WEIGHTS, load_weights

TINY = {"base_channels": 4}  # task and modality rows as the registry gives them (72, 6)
#: (image shape, task lists, modalities): two window sizes, two task counts, a batch of two.
CASES = [
    ((1, 1, 64, 32, 48), [[3, -1]], [0]),
    ((2, 1, 32, 48, 64), [[0, 1, 2, 3, 4, 5, -1], [16, 70, 71, -1, -1, -1, -1]], [-1, 1]),
]


def _run(bundle_root: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.export", *map(str, args)], cwd=bundle_root,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, HermesResUNet]:
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(5)
    network = HermesResUNet(**TINY)
    torch.save(network.state_dict(), folder / "model.pt")
    eager = HermesResUNet(**TINY)
    load_weights(eager, folder / "model.pt")
    return folder / "model.pt", eager.eval()


@pytest.fixture(scope="module")
def exported(bundle_root: Path, tiny: tuple[Path, HermesResUNet]) -> subprocess.CompletedProcess:
    weights, _ = tiny
    result = _run(bundle_root, weights, "--format", "onnx,pt2", "--base_channels", 4, "--check_size", 32)
    assert result.returncode == 0, result.stderr
    return result


def _expected(network: HermesResUNet, shape: tuple, tasks: list, modality: list) -> tuple:
    """Inputs of one case and the eager network's (segmentation logits, modality logits) for them."""
    image = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    task_index, modality_index = torch.tensor(tasks), torch.tensor(modality)
    with torch.no_grad():
        expected = tuple(o.numpy() for o in network(image, task_index, modality_index, return_modality_logits=True))
    return (image, task_index, modality_index), expected


def _assert_close(got: tuple, expected: tuple) -> None:
    assert len(got) == len(expected) == 2
    for name, g, e in zip(hermes_export.OUTPUT_NAMES, got, expected):
        assert g.shape == e.shape, name
        error, scale = float(np.abs(g - e).max()), float(np.abs(e).max())
        assert error <= hermes_export.TOLERANCE * max(1.0, scale), (name, error, scale)


def test_the_command_checks_both_exports_and_prints_the_error(
        exported: subprocess.CompletedProcess, tiny: tuple[Path, HermesResUNet]) -> None:
    weights, _ = tiny
    out = exported.stdout
    assert f"wrote {weights.with_suffix('.onnx')}" in out and f"wrote {weights.with_suffix('.pt2')}" in out
    assert "checked with onnxruntime" in out and "checked with torch.export.load" in out
    for output in ("seg_logits", "modality_logits"):  # both formats, both task lists, both outputs
        assert out.count(f"2 tasks, {output}: max |export - eager|") == 2, out
        assert out.count(f"13 tasks, {output}: max |export - eager|") == 2, out
    assert not any(p.name.startswith(".") for p in weights.parent.iterdir()), "a temporary file was left behind"


def test_onnx_matches_eager_for_other_task_counts_and_sizes(exported: subprocess.CompletedProcess,
                                                            tiny: tuple[Path, HermesResUNet]) -> None:
    import onnxruntime

    weights, network = tiny
    session = onnxruntime.InferenceSession(str(weights.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "task_index", "modality_index"]
    assert [o.name for o in session.get_outputs()] == ["seg_logits", "modality_logits"]
    assert [i.shape for i in session.get_inputs()] == [["batch", 1, "depth", "height", "width"], ["batch", "tasks"],
                                                       ["batch"]]
    assert session.get_outputs()[0].shape == ["batch", "tasks", "depth", "height", "width"]
    record = json.loads(session.get_modelmeta().custom_metadata_map["hermes"])
    # one modality class per prior row, and the file names each row's modality (-1: the last row)
    assert session.get_outputs()[1].shape == ["batch", network.num_modalities]
    assert len({row % network.num_modalities for row in record["modalities"].values()}) == network.num_modalities
    assert set(record["outputs"]) == {"seg_logits", "modality_logits"}
    assert record["backbone"].startswith("Hermes-R") and {"id": 0, "dataset": "lits", "name": "liver", "label": 1} \
        in record["tasks"]
    for case in CASES:
        inputs, expected = _expected(network, *case)
        got = session.run(None, dict(zip(("image", "task_index", "modality_index"), (t.numpy() for t in inputs))))
        _assert_close(tuple(got), expected)


def test_pt2_matches_eager_for_other_task_counts_and_sizes(exported: subprocess.CompletedProcess,
                                                           tiny: tuple[Path, HermesResUNet]) -> None:
    weights, network = tiny
    extra = {"hermes.json": ""}
    program = torch.export.load(weights.with_suffix(".pt2"), extra_files=extra)
    assert json.loads(extra["hermes.json"])["weights"]["path"] == str(weights.resolve())
    module = program.module()
    for case in CASES:
        inputs, expected = _expected(network, *case)
        with torch.no_grad():
            _assert_close(tuple(o.numpy() for o in module(*inputs)), expected)


def test_an_existing_export_is_never_replaced_unasked(bundle_root: Path, exported: subprocess.CompletedProcess,
                                                      tiny: tuple[Path, HermesResUNet]) -> None:
    weights, _ = tiny
    target = weights.with_suffix(".onnx")
    before = target.read_bytes()
    result = _run(bundle_root, weights, "--format", "onnx", "--base_channels", 4)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {target} already exists; pass --overwrite to replace it"]
    assert target.read_bytes() == before


def test_bad_weights_are_one_clear_line(bundle_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "model.pt"
    result = _run(bundle_root, missing, "--format", "pt2")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: no model weights at {missing}: {HOW_TO_GET_WEIGHTS}"], result.stderr
    page = tmp_path / "download.pt"  # a download that saved the server's page instead of the file
    page.write_bytes(b"<html>sign in</html>")
    with pytest.raises(CheckpointError, match=f"{page}: not a PyTorch checkpoint .* web page"):
        hermes_export.export(page, "pt2")
    assert not any(p.suffix == ".pt2" for p in tmp_path.iterdir())


def test_setup_errors_come_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "model.pt"
    with pytest.raises(SetupError, match="--out names one file"):
        hermes_export.export(weights, "onnx,pt2", out=str(tmp_path / "x.onnx"))
    with pytest.raises(SetupError, match="unknown format 'tflite'"):
        hermes_export.export(weights, "tflite")
    with pytest.raises(SetupError, match="--check_size: 100 is not a multiple of 16"):
        hermes_export.export(weights, "pt2", check_size=100)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "onnxscript" else real_find_spec(name))
    with pytest.raises(SetupError, match=r"needs the package onnxscript: pip install .*onnxscript==0\.7\.2"):
        hermes_export.export(weights, "onnx")


def test_export_packages_are_pinned_alike(bundle_root: Path) -> None:
    """requirements.txt (what CI installs), metadata.json's optional packages and the hint a missing one prints."""
    requirements = dict(line.split("==") for line in (bundle_root.parent / "requirements.txt").read_text().splitlines()
                        if "==" in line and not line.startswith("#"))
    optional = json.loads((bundle_root / "configs" / "metadata.json").read_text())["optional_packages_version"]
    for package in hermes_export.ONNX_PACKAGES:
        assert requirements[package] == optional[package]
        assert f"{package}=={optional[package]}" in hermes_export.INSTALL_HINT


def test_an_export_that_fails_the_check_is_not_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: tuple[Path, HermesResUNet]) -> None:
    _, network = tiny
    windows = hermes_export.CheckWindows(network, 32)
    off_by = 1e-3 * max(1.0, float(np.abs(windows.expected[1][0]).max()))  # 10 x the tolerance, on one voxel

    def runner(path: Path):
        def run(image, task_index, modality_index):
            seg, modality = (o.detach().numpy().copy() for o in network(image, task_index, modality_index))
            seg.flat[7] += off_by
            return seg, modality
        return run

    fake = hermes_export.Exporter(lambda program, path, metadata: path.write_bytes(b"model"), runner, lambda: "fake")
    monkeypatch.setitem(hermes_export.EXPORTERS, "pt2", fake)
    target = tmp_path / "model.pt2"
    with pytest.raises(hermes_export.ExportCheckError, match=f"beyond tolerance 0.0001 .*; {target} not written"):
        hermes_export.write_checked("pt2", None, target, "{}", windows, overwrite=False)
    assert list(tmp_path.iterdir()) == []
