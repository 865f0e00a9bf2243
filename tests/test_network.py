"""HermesResUNet behaviour beyond parity: input checks, vectorised prior selection, bf16, export, Model Zoo checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scripts.networks.hermes import HermesResUNet
from scripts.networks.priors import PriorFusionLayer

TINY = {"base_channels": 4, "num_tasks": 6, "num_modalities": 3}


@pytest.fixture(scope="module")
def tiny_network() -> HermesResUNet:
    torch.manual_seed(0)
    return HermesResUNet(**TINY).eval()


def _inputs(batch: int = 2, size: tuple[int, int, int] = (16, 32, 16)):
    torch.manual_seed(1)
    image = torch.randn(batch, 1, *size)
    task_index = torch.tensor([[0, 3, 5], [2, -1, -1]][:batch])
    modality_index = torch.tensor([1, -1][:batch])
    return image, task_index, modality_index


def test_release_size_matches_the_published_parameter_count() -> None:
    network = HermesResUNet()  # base 32, 72 task rows + null, 6 modalities: the published configuration
    count = sum(p.numel() for p in network.parameters())
    assert count == 60_884_998  # the spec quotes 60.9 M
    assert network.fusion[0].task_prior.shape == (73, 128)
    assert network.fusion[2].modality_prior.shape == (6, 10, 320)


def test_output_shapes_and_null_padding(tiny_network: HermesResUNet) -> None:
    image, task_index, modality_index = _inputs()
    with torch.no_grad():
        seg, modality = tiny_network(image, task_index, modality_index)
        seg_only = tiny_network(image, task_index, modality_index.unsqueeze(1), return_modality_logits=False)
    assert seg.shape == (2, 3, 16, 32, 16) and modality.shape == (2, 3)
    torch.testing.assert_close(seg, seg_only)
    # a padded (null) channel is an ordinary output channel of the null token: finite, and identical for both pads
    torch.testing.assert_close(seg[1, 1], seg[1, 2])


def test_prior_selection_is_vectorised_and_matches_a_per_sample_loop() -> None:
    torch.manual_seed(2)
    layer = PriorFusionLayer(dim=32, num_blocks=1, num_tasks=5, num_modalities=3, modality_tokens=10)
    task_index = torch.tensor([[0, 4, -1], [3, 3, 1]])
    modality_index = torch.tensor([2, -1])
    selected = layer.select_priors(task_index, modality_index)
    for i in range(2):
        expected = torch.cat([layer.task_prior[task_index[i]], layer.modality_prior[modality_index[i]]])
        torch.testing.assert_close(selected[i], expected)
    assert torch.equal(selected[0, 2], layer.task_prior[5]), "-1 must select the null row (the last one)"


@pytest.mark.parametrize(
    ("size", "message"),
    [((16, 24, 16), "multiple of 16"), ((16, 16), "B×C×D×H×W")],
)
def test_bad_image_shapes_are_rejected_clearly(tiny_network: HermesResUNet, size, message: str) -> None:
    image = torch.zeros(1, 1, *size)
    with pytest.raises(ValueError, match=message):
        tiny_network(image, torch.tensor([[0]]), torch.tensor([0]))


def test_out_of_range_ids_are_rejected(tiny_network: HermesResUNet) -> None:
    image = torch.zeros(1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match=r"task ids must lie in \[-1, 5\]"):
        tiny_network(image, torch.tensor([[6]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="modality ids"):
        tiny_network(image, torch.tensor([[0]]), torch.tensor([3]))
    with pytest.raises(ValueError, match="task_index must be B×n"):
        tiny_network(image, torch.tensor([0]), torch.tensor([0]))


def test_bf16_autocast_runs_and_agrees_with_float32(tiny_network: HermesResUNet) -> None:
    """bf16 keeps ~3 significant digits, and random weights amplify rounding layer by layer (instance norm over a
    few deep voxels), so compare what matters downstream: the logits' pattern and their sign (the 0.5 threshold)."""
    image, task_index, modality_index = _inputs(size=(32, 32, 32))
    with torch.no_grad():
        reference, _ = tiny_network(image, task_index, modality_index)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            seg, modality = tiny_network(image, task_index, modality_index)
    assert torch.isfinite(seg).all() and torch.isfinite(modality).all()
    correlation = torch.corrcoef(torch.stack([seg.float().flatten(), reference.flatten()]))[0, 1]
    same_sign = ((seg > 0) == (reference > 0)).float().mean()
    assert correlation > 0.95 and same_sign > 0.9, (correlation, same_sign)


def test_backward_reaches_every_prior_table() -> None:
    torch.manual_seed(3)
    network = HermesResUNet(**TINY)
    image, task_index, modality_index = _inputs()
    seg, modality = network(image, task_index, modality_index)
    (seg.mean() + modality.mean()).backward()
    for layer in network.fusion:
        used_rows = layer.task_prior.grad.abs().sum(dim=1) > 0
        assert used_rows[[0, 3, 5, 2, -1]].all() and not used_rows[[1, 4]].any()


def test_torch_export_matches_eager(tiny_network: HermesResUNet) -> None:
    image, task_index, modality_index = _inputs()
    exported = torch.export.export(tiny_network, (image, task_index, modality_index))
    with torch.no_grad():
        eager_seg, eager_modality = tiny_network(image, task_index, modality_index)
        export_seg, export_modality = exported.module()(image, task_index, modality_index)
    torch.testing.assert_close(export_seg, eager_seg, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(export_modality, eager_modality, rtol=1e-4, atol=1e-4)


def test_both_backbones_implement_only_what_differs() -> None:
    """Forward, input checks and the context protocol are HermesNetwork's, written once; the predictor shares the
    task-free part of a window between contexts for any HermesNetwork (not for whatever has a method of that name)."""
    import inspect

    from scripts.networks import BACKBONES, HermesNetwork
    from scripts.predict import WindowPredictor

    for backbone in BACKBONES.values():
        assert issubclass(backbone, HermesNetwork)
        assert not {"forward", "check_inputs", "forward_contexts"} & set(vars(backbone)), backbone
        assert {"encode_context_free", "decode"} <= set(vars(backbone)), backbone
    assert "HermesNetwork" in inspect.getsource(WindowPredictor.forward)
    assert "hasattr" not in inspect.getsource(WindowPredictor.forward)


def test_a_window_the_network_cannot_take_is_refused_naming_roi_size() -> None:
    """Every side a positive multiple of the networks' size divisor, else one line naming --roi_size and the
    nearest window that fits (training and every case of inference failed later, inside a forward pass)."""
    from scripts.errors import SetupError
    from scripts.networks.base import check_window

    assert check_window((48, 64, 128)) == [48, 64, 128]
    for bad, fitted in (([40, 40, 40], [48, 48, 48]), ([0, 16, 33], [16, 16, 48]), (32, [32, 32, 32]),
                        ([32, 32], None), (True, None), ("x", None), ([32.0, 32, 32], None)):
        with pytest.raises(SetupError) as err:
            check_window(bad)
        text = str(err.value)
        assert text.startswith(f"--roi_size {bad}: expected three window sides, each a positive multiple of 16 ")
        assert text.endswith(f"the nearest that fits: {fitted}") if fitted else "nearest" not in text
