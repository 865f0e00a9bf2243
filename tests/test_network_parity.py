"""The bundle's network, fed the published checkpoint through the converter command, reproduces the reference outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.networks.hermes import HermesResUNet

FIXTURE = "hermes_reference"
# Size of the reference network (its config JSON): base width 8, 8 real tasks + 1 spare row (tn = 9), 4 modalities.
FIXTURE_NETWORK = {"base_channels": 8, "num_tasks": 9, "num_modalities": 4}


@pytest.fixture(scope="module")
def reference(shared_fixtures: Path) -> dict:
    folder = shared_fixtures / FIXTURE
    return torch.load(folder / f"{FIXTURE}_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def converted_weights(shared_fixtures: Path, bundle_root: Path, tmp_path_factory) -> Path:
    """Run the converter exactly as a user does (from bundle/), on the published-format fixture checkpoint."""
    destination = tmp_path_factory.mktemp("converted") / "model.pt"
    source = shared_fixtures / FIXTURE / f"{FIXTURE}_checkpoint.pth"
    args = [f"--{k}={v}" for k, v in FIXTURE_NETWORK.items()]
    result = subprocess.run(
        [sys.executable, "-m", "scripts.convert_checkpoint", str(source), str(destination), *args],
        cwd=bundle_root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "405 tensors" in result.stdout
    return destination


def _reference_network(weights: Path) -> HermesResUNet:
    # The fixture input is 32×48×40: like the published code, accept sizes that pooling floors (size_divisor=1).
    network = HermesResUNet(**FIXTURE_NETWORK, size_divisor=1)
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return network.eval()


def _assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= 1e-4 * max(scale, 1.0), f"max abs error {error:.3g} exceeds 1e-4 of the output scale {scale:.3g}"


def test_converted_checkpoint_reproduces_reference_logits(converted_weights: Path, reference: dict) -> None:
    network = _reference_network(converted_weights)
    assert (reference["task_index"] == -1).any(), "the fixture should exercise the null-padded task list"
    with torch.no_grad():
        seg_logits, modality_logits = network(reference["image"], reference["task_index"], reference["modality_index"])
    assert seg_logits.shape == reference["seg_logits"].shape
    assert seg_logits.dtype == torch.float32
    _assert_close_to_scale(seg_logits, reference["seg_logits"])
    _assert_close_to_scale(modality_logits, reference["modality_logits"])


def test_each_sample_matches_reference_when_run_alone(converted_weights: Path, reference: dict) -> None:
    """Prior selection is per sample: running one sample of the batch alone gives that sample's reference output."""
    network = _reference_network(converted_weights)
    with torch.no_grad():
        for i in range(reference["image"].shape[0]):
            seg_logits, modality_logits = network(
                reference["image"][i : i + 1], reference["task_index"][i : i + 1], reference["modality_index"][i]
            )
            _assert_close_to_scale(seg_logits[0], reference["seg_logits"][i])
            _assert_close_to_scale(modality_logits[0], reference["modality_logits"][i])


def test_model_weights_of_the_checkpoint_are_also_convertible(shared_fixtures: Path, tmp_path: Path) -> None:
    from scripts.convert_checkpoint import convert

    written = convert(
        shared_fixtures / FIXTURE / f"{FIXTURE}_checkpoint.pth", tmp_path / "m.pt", state="model", **FIXTURE_NETWORK
    )
    weights = torch.load(written, weights_only=True)
    assert "fusion.4.blocks.1.feature_mlp.fc2.bias" in weights
    assert weights["fusion.0.task_prior"].shape == (10, 32)
