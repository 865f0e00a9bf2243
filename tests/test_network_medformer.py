"""Hermes-M (HermesMedFormer): parity with the published network through the converter command, the same contract as
Hermes-R (contexts, auxiliary output, export, Model Zoo checks), and backbone recognition from a weights file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.networks.medformer import HermesMedFormer

FIXTURE = "hermes_m_reference"
#: The reference network of the fixture's config JSON (base 8, trans_num [0,1,2,2,2,1,0,0], map 2³, fusion depth 1,
#: expansion 2, tn 9, mn 4), as the converter's options.
FIXTURE_OPTIONS = ["--base_channels=8", "--num_tasks=9", "--num_modalities=4", "--map_size=2", "--fusion_depth=1",
                   "--expansion=2", "--attention_blocks", "1", "2", "2", "2", "1"]
FIXTURE_NETWORK = {"base_channels": 8, "num_tasks": 9, "num_modalities": 4, "map_size": 2, "fusion_depth": 1,
                   "expansion": 2, "attention_blocks": (1, 2, 2, 2, 1)}
#: A tiny Hermes-M for behaviour tests.
TINY = {"base_channels": 4, "num_tasks": 6, "num_modalities": 3, "attention_blocks": (1, 1, 1, 1, 2), "map_size": 2,
        "fusion_depth": 1, "expansion": 2}


def convert(bundle_root: Path, source: Path, destination: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.convert_checkpoint", str(source), str(destination), *options],
                          cwd=bundle_root, capture_output=True, text=True)


@pytest.fixture(scope="module")
def reference(shared_fixtures: Path) -> dict:
    return torch.load(shared_fixtures / FIXTURE / f"{FIXTURE}_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def published(shared_fixtures: Path) -> Path:
    return shared_fixtures / FIXTURE / f"{FIXTURE}_checkpoint.pth"


@pytest.fixture(scope="module")
def reference_network(published: Path, bundle_root: Path, tmp_path_factory) -> HermesMedFormer:
    """The fixture checkpoint through the converter command exactly as a user runs it (backbone recognised)."""
    destination = tmp_path_factory.mktemp("converted") / "model.pt"
    done = convert(bundle_root, published, destination, *FIXTURE_OPTIONS)
    assert done.returncode == 0, done.stderr
    assert "207 tensors" in done.stdout and "Hermes-M" in done.stdout
    network = HermesMedFormer(**FIXTURE_NETWORK)
    network.load_state_dict(torch.load(destination, weights_only=True), strict=True)
    return network.eval()


@pytest.fixture(scope="module")
def tiny() -> HermesMedFormer:
    torch.manual_seed(0)
    return HermesMedFormer(**TINY).eval()


def _inputs(batch: int = 2, size: tuple[int, int, int] = (16, 32, 16)):
    torch.manual_seed(1)
    return torch.randn(batch, 1, *size), torch.tensor([[0, 3, 5], [2, -1, -1]][:batch]), torch.tensor([1, -1][:batch])


def _assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= 1e-4 * max(scale, 1.0), f"max abs error {error:.3g} exceeds 1e-4 of the output scale {scale:.3g}"


# ------------------------------------------------------------------------------------------------------- parity
def test_release_size_matches_the_published_counts() -> None:
    network = HermesMedFormer()
    assert sum(p.numel() for p in network.parameters()) == 47_129_990  # the spec: 47.13 M
    assert len(network.state_dict()) == 398  # as many state tensors as the published format
    assert network.fusion[0].task_prior.shape == (73, 128) and network.fusion[2].modality_prior.shape == (6, 10, 320)


def test_converted_checkpoint_reproduces_main_auxiliary_and_modality_logits(reference_network, reference) -> None:
    assert (reference["task_index"] == -1).any(), "the fixture should exercise the null-padded task list"
    with torch.no_grad():
        (seg, aux), modality = reference_network(reference["image"], reference["task_index"],
                                                 reference["modality_index"], return_auxiliary=True)
        seg_only = reference_network(reference["image"], reference["task_index"], reference["modality_index"],
                                     return_modality_logits=False)
    assert seg.shape == reference["seg_logits"].shape == aux.shape
    _assert_close_to_scale(seg, reference["seg_logits"])
    _assert_close_to_scale(aux, reference["aux_seg_logits"])
    _assert_close_to_scale(modality, reference["modality_logits"])
    torch.testing.assert_close(seg_only, seg)  # eval mode: the main output only


def test_each_sample_alone_and_several_contexts_at_once_match(reference_network, reference) -> None:
    """Per-sample prior selection; and the task-free trunk computed once for two contexts (what inference does)."""
    image, tasks, modality = reference["image"], reference["task_index"], reference["modality_index"]
    with torch.no_grad():
        for i in range(image.shape[0]):
            seg, mod = reference_network(image[i:i + 1], tasks[i:i + 1], modality[i])
            _assert_close_to_scale(seg[0], reference["seg_logits"][i])
            _assert_close_to_scale(mod[0], reference["modality_logits"][i])
        # sample 0's window in its own context and in sample 1's, the trunk computed once
        shared = [t.repeat(2, *([1] * (t.ndim - 1))) for t in reference_network.encode_context_free(image[:1])]
        both = reference_network.forward_contexts(shared, tasks, modality[:1, 0].expand(2),
                                                  return_modality_logits=False)
        other = reference_network(image[:1], tasks[1:], modality[:1], return_modality_logits=False)
    _assert_close_to_scale(both[0], reference["seg_logits"][0])
    _assert_close_to_scale(both[1], other[0])  # same arithmetic, different batch shapes: float noise only


def test_misfits_are_named_and_backbones_never_mix(bundle_root: Path, published: Path, shared_fixtures: Path,
                                                   tmp_path: Path) -> None:
    from scripts.convert_checkpoint import convert as convert_in_process
    from scripts.errors import SetupError
    from scripts.io.checkpoints import CheckpointError

    done = convert(bundle_root, published, tmp_path / "a.pt", "--base_channels=8", "--num_tasks=9", "--num_modalities=4")
    assert done.returncode == 1 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "'down2.map_gen.semantic_proj.weight' has shape (8, 32, 3, 3, 3)" in done.stderr and "map_size" in done.stderr
    small = {"base_channels": 8, "num_tasks": 9, "num_modalities": 4}
    with pytest.raises(CheckpointError, match=r"holds Hermes-M \(MedFormer\) weights but the configured network is "
                                              r"Hermes-R \(ResUNet\); configure backbone 'm'"):
        convert_in_process(published, tmp_path / "b.pt", backbone="r", **small)
    r_source = shared_fixtures / "hermes_reference" / "hermes_reference_checkpoint.pth"
    with pytest.raises(SetupError, match="--map_size is an option of Hermes-M"):
        convert_in_process(r_source, tmp_path / "c.pt", map_size=2, **small)
    assert not list(tmp_path.iterdir()), "a refused conversion wrote something"


# ---------------------------------------------------------------------------------------------------- contract
def test_training_mode_returns_main_and_auxiliary_outputs_that_train_every_parameter() -> None:
    from scripts.training.losses import HermesLoss

    torch.manual_seed(3)
    network = HermesMedFormer(**TINY).train()
    image, tasks, modality = _inputs()
    seg, modality_logits = network(image, tasks, modality)
    assert isinstance(seg, list) and [s.shape for s in seg] == [(2, 3, 16, 32, 16)] * 2
    label = (torch.rand(2, 3, 16, 32, 16) > 0.5).float()
    HermesLoss(deep_supervision_weights=[0.5, 0.5])((seg, modality_logits), (label, tasks, modality)).backward()
    unused = [name for name, p in network.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    unused = [n for n in unused if "_prior" not in n]  # unrequested prior rows aside, everything must learn
    assert not unused, unused
    for site in network.fusion:
        used_rows = site.task_prior.grad.abs().sum(dim=1) > 0
        assert used_rows[[0, 3, 5, 2, -1]].all() and not used_rows[[1, 4]].any()
    assert not isinstance(network.eval()(image, tasks, modality)[0], list)
    assert isinstance(network(image, tasks, modality, return_auxiliary=True)[0], list)


def test_bad_inputs_are_rejected_as_by_hermes_r(tiny: HermesMedFormer) -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny(torch.zeros(1, 1, 16, 24, 16), torch.tensor([[0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"task ids must lie in \[-1, 5\]"):
        tiny(torch.zeros(1, 1, 16, 16, 16), torch.tensor([[6]]), torch.tensor([0]))


def test_window_predictor_runs_contexts_on_the_shared_trunk(tiny: HermesMedFormer) -> None:
    from scripts.predict import ABSENT, WindowPredictor

    image, _, _ = _inputs(batch=2)
    contexts = torch.tensor([[0, 3, -1], [2, -1, ABSENT]])
    modality = torch.tensor([1])
    with torch.no_grad():
        probs = WindowPredictor(tiny, amp=False)(image, contexts, modality)
        first = torch.sigmoid(tiny(image, torch.tensor([[0, 3, -1]] * 2), modality.expand(2))[0])
        second = torch.sigmoid(tiny(image, torch.tensor([[2, -1]] * 2), modality.expand(2))[0])
    torch.testing.assert_close(probs, torch.cat([first[:, :2], second[:, :1]], dim=1))


def test_torch_export_matches_eager(tiny: HermesMedFormer) -> None:
    image, tasks, modality = _inputs()
    exported = torch.export.export(tiny, (image, tasks, modality))
    with torch.no_grad():
        eager_seg, eager_modality = tiny(image, tasks, modality)
        export_seg, export_modality = exported.module()(image, tasks, modality)
    torch.testing.assert_close(export_seg, eager_seg, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(export_modality, eager_modality, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------- configs and weights files
@pytest.mark.parametrize("configs", [("inference.json", "hermes_m.json"), ("train.json", "hermes_m.json")])
def test_verify_net_in_out_with_the_overlay(bundle_root: Path, configs: tuple[str, ...], monkeypatch) -> None:
    from monai.bundle import verify_net_in_out

    monkeypatch.chdir(bundle_root)
    verify_net_in_out(net_id="network_def", meta_file=str(bundle_root / "configs" / "metadata.json"),
                      config_file=[str(bundle_root / "configs" / c) for c in configs], device="cpu", n=1, any=1,
                      extra_forward_args={"task_index": torch.tensor([[9]]), "modality_index": torch.tensor([0]),
                                          "return_modality_logits": False})


@pytest.mark.parametrize("configs", [("inference.json", "hermes_m.json"),
                                     ("inference.json", "evaluate.json", "hermes_m.json")])
def test_check_properties_with_the_overlay(bundle_root: Path, configs: tuple[str, ...], monkeypatch) -> None:
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(bundle_root)
    workflow = ConfigWorkflow(config_file=[f"configs/{c}" for c in configs], workflow_type="infer",
                              meta_file="configs/metadata.json", bundle_root=str(bundle_root))
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.parser.get_parsed_content("backbone") == "m"


def test_inference_config_builds_the_backbone_of_its_weights(bundle_root: Path, tmp_path: Path, monkeypatch) -> None:
    """No backbone flag: the network of configs/inference.json follows the weights at ckpt_path in every format."""
    from monai.bundle import ConfigParser

    from scripts.io.checkpoints import CheckpointError
    from scripts.networks import HermesResUNet
    from scripts.weights import backbone_of_weights, load_weights

    monkeypatch.chdir(bundle_root)
    torch.manual_seed(4)
    source = HermesMedFormer(base_channels=4, num_tasks=72).state_dict()
    files = {"weights.pt": source, "run.pt": {"model_state_dict": source, "ema_model_state_dict": source},
             "ddp.pt": {f"module.{k}": v for k, v in source.items()}}
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        parser = ConfigParser()
        parser.read_config(str(bundle_root / "configs" / "inference.json"))
        parser.update({"ckpt_path": str(tmp_path / name), "base_channels": 4})
        network = parser.get_parsed_content("network_def")
        assert isinstance(network, HermesMedFormer), name
        load_weights(network, tmp_path / name)
    assert backbone_of_weights(tmp_path / "absent.pt") == "r"  # no weights yet: the released backbone
    with pytest.raises(CheckpointError, match="holds Hermes-M .* configured network is Hermes-R"):
        load_weights(HermesResUNet(base_channels=4, num_tasks=72), tmp_path / "weights.pt")
