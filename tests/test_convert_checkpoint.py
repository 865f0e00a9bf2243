"""The converter command: clear one-line errors for bad sources, and it never overwrites without being asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.checkpoint_names import published_to_bundle_name
from scripts.networks.hermes import HermesResUNet



def _run(bundle_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts.convert_checkpoint", *map(str, args)],
        cwd=bundle_root,
        capture_output=True,
        text=True,
    )


@pytest.fixture()
def published_checkpoint(shared_fixtures: Path) -> Path:
    return shared_fixtures / "hermes_reference" / "hermes_reference_checkpoint.pth"


def test_every_published_name_maps_onto_the_network(shared_fixtures: Path) -> None:
    source = shared_fixtures / "hermes_reference" / "hermes_reference_checkpoint.pth"
    checkpoint = torch.load(source, weights_only=True)
    names = {published_to_bundle_name(k) for k in checkpoint["ema_model_state_dict"]}
    expected = set(HermesResUNet(base_channels=8, num_tasks=9, num_modalities=4).state_dict())
    assert names == expected


def test_unknown_tensor_name_is_rejected() -> None:
    with pytest.raises(KeyError, match="decoder_extra.weight"):
        published_to_bundle_name("decoder_extra.weight")


def test_not_a_checkpoint_gives_one_clear_line(bundle_root: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.pth"
    bogus.write_text("this is not a checkpoint")
    result = _run(bundle_root, bogus, tmp_path / "out.pt")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert str(bogus) in result.stderr and "weights_only=True" in result.stderr
    assert not (tmp_path / "out.pt").exists()


def test_missing_ema_weights_are_named(bundle_root: Path, tmp_path: Path) -> None:
    source = tmp_path / "plain.pth"
    torch.save({"epoch": 3, "state_dict": {}}, source)
    result = _run(bundle_root, source, tmp_path / "out.pt")
    assert result.returncode == 1
    assert "neither a weights file nor a Hermes checkpoint (it holds: epoch, state_dict)" in result.stderr


def test_shape_mismatch_names_the_tensor(bundle_root: Path, published_checkpoint: Path, tmp_path: Path) -> None:
    # The fixture is base width 8; asking for the release width 32 must fail on the very first tensor it checks.
    result = _run(bundle_root, published_checkpoint, tmp_path / "out.pt", "--num_tasks=9", "--num_modalities=4")
    assert result.returncode == 1
    assert "inc.conv1.weight" in result.stderr and "(8, 1, 3, 3, 3)" in result.stderr
    assert "(32, 1, 3, 3, 3)" in result.stderr
    assert not (tmp_path / "out.pt").exists()


def test_existing_destination_is_kept_unless_overwrite(
    bundle_root: Path, published_checkpoint: Path, tmp_path: Path
) -> None:
    destination = tmp_path / "model.pt"
    destination.write_bytes(b"user's own weights")
    args = ["--base_channels=8", "--num_tasks=9", "--num_modalities=4"]
    result = _run(bundle_root, published_checkpoint, destination, *args)
    assert result.returncode == 1 and "--overwrite" in result.stderr
    assert destination.read_bytes() == b"user's own weights"

    result = _run(bundle_root, published_checkpoint, destination, *args, "--overwrite")
    assert result.returncode == 0, result.stderr
    weights = torch.load(destination, weights_only=True)
    HermesResUNet(base_channels=8, num_tasks=9, num_modalities=4).load_state_dict(weights, strict=True)
    assert not list(tmp_path.glob(".model.pt.*.tmp")), "temporary file left behind"


def test_ddp_prefixed_names_are_accepted(published_checkpoint: Path, tmp_path: Path) -> None:
    from scripts.convert_checkpoint import convert

    checkpoint = torch.load(published_checkpoint, weights_only=True)
    checkpoint["ema_model_state_dict"] = {f"module.{k}": v for k, v in checkpoint["ema_model_state_dict"].items()}
    source = tmp_path / "ddp.pth"
    torch.save(checkpoint, source)
    written = convert(source, tmp_path / "out.pt", base_channels=8, num_tasks=9, num_modalities=4)
    assert len(torch.load(written, weights_only=True)) == 405


def test_a_run_checkpoint_converts_to_weights(bundle_root: Path, tmp_path: Path) -> None:
    """A training run's best.pt becomes a weights file (its EMA weights), e.g. to hand on without the run folder."""
    net, ema = (HermesResUNet(base_channels=4, num_tasks=72) for _ in range(2))
    torch.save({"model_state_dict": net.state_dict(), "ema_model_state_dict": ema.state_dict(),
                "optimizer_state_dict": None}, tmp_path / "best.pt")
    result = _run(bundle_root, tmp_path / "best.pt", tmp_path / "model.pt", "--base_channels=4")
    assert result.returncode == 0, result.stderr
    weights = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], v) for k, v in ema.state_dict().items())
