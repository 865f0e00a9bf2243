"""One loader for every weights file a user may hold: the bundle's, a run checkpoint, the published checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from scripts.errors import SetupError
from scripts.io.checkpoints import CheckpointError
from scripts.networks.hermes import HermesResUNet
from scripts.weights import load_weights


def test_messages_for_missing_wrong_and_broken_files(tmp_path):
    net = torch.nn.Linear(2, 3)
    with pytest.raises(SetupError) as missing:
        load_weights(net, tmp_path / "model.pt")
    text = str(missing.value)
    assert "no model weights at" in text and "python -m monai.bundle run training" in text
    assert "download_large_files" in text
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "other_format.pt")
    with pytest.raises(CheckpointError, match=r"other_format.pt: neither a weights file nor a Hermes checkpoint "
                                              r"\(it holds: epoch, optimizer\)"):
        load_weights(net, tmp_path / "other_format.pt")
    torch.save(torch.nn.Linear(2, 4).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: tensor 'weight' has shape \(4, 2\) but the configured network "
                                              r"needs \(3, 2\)"):
        load_weights(net, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a PyTorch checkpoint that loads with weights_only=True "
                                              r"\(the file is not a torch.save archive"):
        load_weights(net, tmp_path / "junk.pt")


def test_plain_weights_and_run_checkpoints_load_their_ema_weights(tmp_path):
    net = torch.nn.Linear(2, 3)
    source, ema = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    torch.save(source.state_dict(), tmp_path / "ok.pt")
    loaded = load_weights(net, tmp_path / "ok.pt")
    assert loaded.sha256 == hashlib.sha256((tmp_path / "ok.pt").read_bytes()).hexdigest() and loaded.kind == "weights"
    assert torch.equal(net.weight, source.weight)
    run = {"model_state_dict": source.state_dict(), "ema_model_state_dict": ema.state_dict(), "epoch": 3,
           "optimizer_state_dict": None}
    torch.save(run, tmp_path / "best.pt")
    assert load_weights(net, tmp_path / "best.pt").kind == "checkpoint (ema_model_state_dict)"
    assert torch.equal(net.weight, ema.weight)
    assert load_weights(net, tmp_path / "best.pt", state="model").kind == "checkpoint (model_state_dict)"
    assert torch.equal(net.weight, source.weight)


def test_published_checkpoint_is_converted_in_memory(shared_fixtures: Path):
    source = shared_fixtures / "hermes_reference" / "hermes_reference_checkpoint.pth"
    net = HermesResUNet(base_channels=8, num_tasks=9, num_modalities=4)
    loaded = load_weights(net, source)
    assert loaded.kind == "published checkpoint (ema_model_state_dict), converted"
    published = torch.load(source, weights_only=True)["ema_model_state_dict"]
    assert torch.equal(net.stem.conv.weight, published["inc.conv1.weight"])
    with pytest.raises(CheckpointError, match=r"'inc.conv1.weight' has shape \(8, 1, 3, 3, 3\) but the configured "
                                              r"network needs \(4, 1, 3, 3, 3\)"):
        load_weights(HermesResUNet(base_channels=4, num_tasks=9, num_modalities=4), source)
