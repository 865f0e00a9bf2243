"""Inference intensity statistics from the body's bounding box (issue 8, item 4), on the sample suite's real scans.

The published model saw CT/MR z-scored over crops around labelled anatomy; inference sees whole scans with air around
the body. ``statistics="body"`` (configs/inference.json) must bring the same voxels close to their training values,
while ``statistics="image"`` (training, configs/train.json) stays the published formula. The training-like crops
and the measurement helpers are those of bench/normalization_study.py.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from scripts.data.body import body_box
from scripts.data.transforms import HermesNormalizeIntensityd
from scripts.errors import SetupError
from scripts.inference.modality import ModalityStep, centre_window

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"


def _study():
    spec = importlib.util.spec_from_file_location("normalization_study", REPO / "bench" / "normalization_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STUDY = _study()


def _parsed(config: str, ids: list[str], **updates) -> list:
    """Objects of a bundle config, parsed from the bundle folder as the workflows run."""
    here = os.getcwd()
    os.chdir(BUNDLE)
    try:
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / "configs" / config))
        parser.update(updates)
        return [parser.get_parsed_content(i) for i in ids]
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def inference(sample_suite: dict) -> dict:
    """The inference workflow's preprocessing (image + label), registry (with the suite's datasets), normaliser."""
    preprocessing, registry, normalizer = _parsed(
        "inference.json", ["preprocessing", "task_registry", "normalize_intensity"],
        image_keys=["image", "label"], interpolation=["bilinear", "nearest"],
        task_registry_extra=[sample_suite["task_registry"]])
    return {"preprocessing": preprocessing, "registry": registry, "normalizer": normalizer,
            "root": sample_suite["root"], "cases": {}}


def _case(inference: dict, folder: str, case: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(image, label, modality index) of a sample-suite case on the network's grid, loaded once per module."""
    if case not in inference["cases"]:
        image, label = STUDY.load_case(inference["preprocessing"], inference["root"], folder, case)
        registry = inference["registry"]
        inference["cases"][case] = (image, label, registry.modality_index(registry.dataset_modality(folder)))
    return inference["cases"][case]


def _mean_abs_diff(image: np.ndarray, crop: np.ndarray, stats, is_ct: bool) -> float:
    train = STUDY.statistics_of(image, crop, is_ct)
    return float(np.abs(STUDY.apply(image[crop], stats) - STUDY.apply(image[crop], train)).mean())


def test_configs_ship_body_statistics_for_inference_and_image_statistics_for_training(inference) -> None:
    assert inference["normalizer"].statistics == "body"
    (training,) = _parsed("train.json", ["normalize_intensity"])
    assert training.statistics == "image"
    with pytest.raises(SetupError, match="HermesNormalizeIntensityd: statistics must be one of image, body, got 'crop"):
        HermesNormalizeIntensityd(statistics="crop")


@pytest.mark.parametrize("case", ["lung1", "lung2"])
def test_body_statistics_bring_real_ct_close_to_its_training_crop(inference, case: str) -> None:
    image, label, modality = _case(inference, "sample_lung_ct", case)
    crop = STUDY.reference_crop("lungs+20", image, label, True)  # StructSeg thoracic OARs: lungs' box + 20 voxels
    assert 0.6 < crop.mean() < 0.8
    train = STUDY.statistics_of(image, crop, True)
    plain = torch.as_tensor(image[None], dtype=torch.float32)
    shipped = inference["normalizer"].statistics_of(plain, modality)
    whole = HermesNormalizeIntensityd().statistics_of(plain, modality)
    hu40 = np.array([40.0])
    trained, body, scan = (float(STUDY.apply(hu40, s)[0]) for s in (train, shipped, whole))
    assert abs(body - trained) < 0.12 < 0.2 < abs(scan - trained)  # lung1: 0.95 crop, 1.03 body box, 1.33 scan
    assert _mean_abs_diff(image, crop, shipped, True) < 0.16 < 0.3 < _mean_abs_diff(image, crop, whole, True)
    # the transform maps every voxel with those statistics, clip first
    out = inference["normalizer"]({"image": MetaTensor(plain), "modality_index": torch.tensor(modality)})["image"]
    expected = (np.clip(image, -991, 500) - shipped[2]) / shipped[3]
    assert isinstance(out, MetaTensor)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-4)


def test_image_statistics_stay_the_published_formula_on_real_scans(inference) -> None:
    for folder, case in (("sample_lung_ct", "lung1"), ("sample_brain_t1", "brain2")):
        image, _, modality = _case(inference, folder, case)
        out = HermesNormalizeIntensityd()({"image": torch.as_tensor(image[None], dtype=torch.float32),
                                           "modality_index": modality})["image"][0].numpy()
        clipped = np.clip(image, -991, 500) if case == "lung1" else np.clip(image, *np.percentile(image, [2, 98]))
        np.testing.assert_allclose(out, (clipped - clipped.mean()) / clipped.std(), atol=2e-5)


def test_mr_body_box_near_the_lesion_crop_and_the_uncropped_brain(inference) -> None:
    normalizer = inference["normalizer"]
    for case in ("brain1", "brain2"):  # statistics of a lesion crop (label box + 20): the body box is closer
        image, label, modality = _case(inference, "sample_brain_t1", case)
        crop = STUDY.reference_crop("label+20", image, label, False)
        plain = torch.as_tensor(image[None], dtype=torch.float32)
        shipped = _mean_abs_diff(image, crop, normalizer.statistics_of(plain, modality), False)
        whole = _mean_abs_diff(image, crop, HermesNormalizeIntensityd().statistics_of(plain, modality), False)
        assert shipped < whole - 0.03
    image, _, modality = _case(inference, "sample_colin27_t1", "colin27")  # brain structures: not cropped
    stats = normalizer.statistics_of(torch.as_tensor(image[None], dtype=torch.float32), modality)
    assert 0 < _mean_abs_diff(image, np.ones(image.shape, bool), stats, False) < 0.06


def test_body_box_is_the_subject_without_couch_noise_or_air() -> None:
    shape = (30, 40, 50)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    body = ((grid[0] - 15) / 10) ** 2 + ((grid[1] - 18) / 12) ** 2 + ((grid[2] - 25) / 16) ** 2 <= 1
    ct = np.full(shape, -1000.0)
    ct[body] = 40.0
    ct[:, 34:36, 5:45] = 100.0  # the couch, apart from the body
    ct[2, 2, 2] = 800.0  # a speck
    assert body_box(torch.as_tensor(ct[None]), True) == (slice(None), slice(5, 26), slice(6, 31), slice(9, 42))
    mr = np.where(body, 900.0, 0.0) + np.random.default_rng(0).normal(0, 10, shape) - 500.0  # offset intensities
    assert body_box(torch.as_tensor(mr[None]), False) == (slice(None), slice(5, 26), slice(6, 31), slice(9, 42))


def test_constant_all_air_and_pet_images_keep_whole_image_statistics(inference) -> None:
    normalizer = inference["normalizer"]
    registry = inference["registry"]
    for value, modality in ((40.0, "ct"), (7.0, "t1"), (0.0, "mr")):  # constant: the mean removed, nothing else
        item = {"image": torch.full((1, 6, 6, 6), value), "modality_index": registry.modality_index(modality)}
        assert torch.equal(normalizer(item)["image"], torch.zeros(1, 6, 6, 6))
    air = -1000.0 + 30.0 * torch.randn(1, 12, 12, 12, generator=torch.Generator().manual_seed(0))  # nothing > -500 HU
    ct = {"image": air, "modality_index": registry.modality_index("ct")}
    assert body_box(air, True) is None
    assert torch.equal(normalizer(ct)["image"], HermesNormalizeIntensityd()(ct)["image"])
    pet = {"image": torch.zeros(1, 20, 20, 20), "modality_index": registry.modality_index("pet")}
    pet["image"][:, 5:15, 5:15, 5:15] = 1.0 + torch.rand(1, 10, 10, 10)  # a body in air: PET keeps the whole image
    assert body_box(pet["image"], False) is not None
    assert torch.equal(normalizer(pet)["image"], HermesNormalizeIntensityd()(pet)["image"])


def test_modality_probe_normalises_its_window_with_body_statistics(inference) -> None:
    class Recorder:
        def modality_logits(self, window: torch.Tensor, modality_index: int = -1) -> torch.Tensor:
            self.window = window
            return torch.tensor([[0.0, 0.0, 0.0, 5.0, 0.0, 0.0]])

    image, _, _ = _case(inference, "sample_lung_ct", "lung1")
    recorder = Recorder()
    step = ModalityStep(inference["registry"], "auto", recorder, inference["normalizer"], [32, 32, 32])
    scan = MetaTensor(torch.as_tensor(image[None], dtype=torch.float32))
    assert step({"image": scan, "source": "lung1"}) == ("t2", "network modality head")
    normalised = inference["normalizer"]({"image": scan, "modality_index": -1})["image"]  # the unknown-MRI rule
    assert torch.equal(recorder.window[0], centre_window(normalised.as_tensor(), [32, 32, 32]))
    assert torch.equal(scan.as_tensor(), torch.as_tensor(image[None], dtype=torch.float32))  # the case is untouched
