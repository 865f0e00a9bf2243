"""The published sliding-window inference in one-dataset task contexts, reproduced through the bundle's own path:
the converter command, the inference config's sliding-window inferer and the one prediction core."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from scripts.networks.hermes import HermesResUNet
from scripts.predict import TaskContext, WindowPredictor, channel_layout, sliding_window_probabilities
from test_network_parity import FIXTURE_NETWORK, converted_weights  # noqa: F401  (the converter run, shared)
from scripts.weights import load_weights


@pytest.fixture(scope="module")
def context_reference(shared_fixtures: Path) -> dict:
    return torch.load(shared_fixtures / "hermes_context_reference" / "hermes_context_reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def inference_inferer(bundle_root: Path):
    """The sliding-window inferer exactly as configs/inference.json declares it (128³ windows, overlap 0.5)."""
    from monai.bundle import ConfigParser

    here = os.getcwd()
    os.chdir(bundle_root)
    try:
        parser = ConfigParser()
        parser.read_config("configs/inference.json")
        parser.parse()
        return parser.get_parsed_content("inferer")
    finally:
        os.chdir(here)


#: The region run: the image's last 128 voxels along H and W (its busiest corner; D keeps all 144). On this crop the
#: inferer's windows (128³, overlap 0.5) are the full image's windows that cover its last 32 voxels along H and W (the
#: windows starting at 32 of 160: no other window reaches them), so there every probability is the published one, and
#: along D both windows (starts 0 and 16) still overlap and blend. Two windows per context instead of eight.
CROP = 32
#: The voxels compared: H and W at or beyond 128 (the full image's own indices), every sampled D.
COMPARED = 128


def test_one_dataset_contexts_reproduce_the_published_sliding_window(converted_weights, context_reference,  # noqa: F811
                                                                     inference_inferer):
    network = HermesResUNet(**FIXTURE_NETWORK).eval()
    assert load_weights(network, converted_weights).kind == "weights"
    reference = context_reference
    full = reference["image"].float()[None]  # 1 × 144 × 160 × 160, SPL 1.5 mm, published CT normalisation
    assert full.shape == (1, 144, 160, 160) and list(inference_inferer.roi_size) == [128] * 3
    image = full[:, :, CROP:, CROP:]
    step = int(reference["stride"])
    contexts = [TaskContext(name, tuple(t for t in reference["contexts"][name] if t >= 0))
                for name in ("dataset_a", "dataset_b")]
    assert [c.tokens for c in contexts] == [tuple(reference["contexts"][c.dataset]) for c in contexts]
    probs = sliding_window_probabilities(image, contexts, int(reference["modality_index"]), inference_inferer,
                                         WindowPredictor(network), "cpu")
    layout = channel_layout(contexts)
    assert probs.shape == (7, 144, 128, 128)
    ours_region = (slice(None), slice(None, None, step), slice(COMPARED - CROP, None, step),
                   slice(COMPARED - CROP, None, step))
    region = (slice(None), slice(None), slice(COMPARED // step, None), slice(COMPARED // step, None))
    union = reference["prob_union_no_null"][region]
    for context in contexts:
        expected = reference[f"prob_{context.dataset}"][: len(context.task_ids)][region]  # no null channel output
        ours = probs[[layout[(context.dataset, t)] for t in context.task_ids]][ours_region]
        assert ours.shape == expected.shape == (len(context.task_ids), 36, 8, 8)
        error = float((ours - expected).abs().max())
        assert error <= 1e-4, f"{context.dataset}: max abs error {error:.3g}"
        # the context matters: the union pass (no null) gives these tasks other probabilities
        in_union = union[[reference["contexts"]["union_no_null"].index(t) for t in context.task_ids]]
        assert float((ours - in_union).abs().max()) > 0.05
