"""Hermes transforms on NIfTI files written to disk, the published training chain end to end, and batch collation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
    RandSpatialCropd,
    Spacingd,
    SpatialPadd,
)

from scripts.collate import pad_tasks_collate
from scripts.datalist import load_datalist
from scripts.task_registry import TaskRegistry
from scripts.transforms import HermesNormalizeIntensityd, LabelToTaskChannelsd, RandomizeByDatasetProbd

KEYS = ["image", "label"]


@pytest.fixture(scope="module")
def registry(bundle_root: Path) -> TaskRegistry:
    return TaskRegistry.load(bundle_root / "configs" / "task_registry.json")


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, registry: TaskRegistry) -> list[dict]:
    """A CT-like case (lits, HU values, 2 organs) and an MR-like case (chaos T2), anisotropic, written as NIfTI."""
    folder = tmp_path_factory.mktemp("cases")
    rng = np.random.default_rng(0)
    shape = (40, 36, 14)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    liver = ((grid[0] - 14) ** 2 + (grid[1] - 16) ** 2 + (3 * (grid[2] - 7)) ** 2) < 81
    tumour = ((grid[0] - 15) ** 2 + (grid[1] - 17) ** 2 + (3 * (grid[2] - 7)) ** 2) < 9
    label = np.where(tumour, 2, np.where(liver, 1, 0)).astype(np.uint8)
    ct = np.where(liver, 60.0, -1000.0) + rng.normal(0, 30, shape)
    ct[0, 0, 0] = 3000.0  # metal: clipped to 500
    mr = np.where(liver, 400.0, 100.0) + rng.gamma(2.0, 40.0, shape)
    affine = np.array([[-0.8, 0, 0, 10], [0, -0.8, 0, 20], [0, 0, 2.5, -30], [0, 0, 0, 1]])
    for name, image in (("ct", ct), ("mr", mr)):
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(folder / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(folder / "label.nii.gz"))
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": [
        {"image": "ct.nii.gz", "label": "label.nii.gz", "dataset": "lits"},
        {"image": "mr.nii.gz", "label": "label.nii.gz", "dataset": "chaos", "modality": "t2"},
    ]}))
    return load_datalist(datalist, registry, label_cache=None)


def _preprocess(axcodes: str = "RAS") -> list:
    return [
        LoadImaged(keys=KEYS),
        EnsureChannelFirstd(keys=KEYS),
        Orientationd(keys=KEYS, axcodes=axcodes, labels=None),
        Spacingd(keys=KEYS, pixdim=1.5, mode=("bilinear", "nearest")),
        HermesNormalizeIntensityd(keys="image", modality_key="modality_index"),
    ]


def _train_chain(crop: int, margin: int) -> Compose:
    """The chain documented in scripts/transforms.py, with a small crop."""
    def by_dataset(transform):
        return RandomizeByDatasetProbd(transform, prob_key="intensity_aug_prob")

    return Compose(_preprocess("SPL") + [
        SpatialPadd(keys=KEYS, spatial_size=crop),
        RandSpatialCropd(keys=KEYS, roi_size=crop + margin),
        RandAffined(
            keys=KEYS, spatial_size=[crop] * 3, prob=0.5, rotate_range=(math.pi / 6,) * 3,
            scale_range=((-0.3, 1 / 0.7 - 1),) * 3, shear_range=(0.1,) * 6, mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        by_dataset(RandScaleIntensityd(keys="image", factors=0.3)),
        by_dataset(RandShiftIntensityd(keys="image", offsets=0.1)),
        by_dataset(RandAdjustContrastd(keys="image", gamma=(0.7, 1.5), retain_stats=True)),
        by_dataset(RandScaleIntensityFixedMeand(keys="image", factors=0.3, fixed_mean=True, preserve_range=True)),
        by_dataset(RandGaussianSmoothd(keys="image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0))),
        by_dataset(RandGaussianNoised(keys="image", std=0.1, sample_std=True)),
        LabelToTaskChannelsd(keys="label"),
        EnsureTyped(keys=["task_index", "modality_index"], dtype=torch.long, track_meta=False),
    ])


def test_normalisation_matches_the_published_formula(cases: list[dict]) -> None:
    raw = [Compose(_preprocess()[:-1])(item) for item in cases]  # resampled, not yet normalised
    normalised = [Compose(_preprocess())(item) for item in cases]
    for before, after, is_ct in zip(raw, normalised, (True, False)):
        array = before["image"].numpy().astype(np.float64)
        if is_ct:
            clipped = np.clip(array, -991, 500)
        else:
            clipped = np.clip(array, np.percentile(array, 2), np.percentile(array, 98))
        expected = (clipped - clipped.mean()) / clipped.std()
        assert isinstance(after["image"], MetaTensor) and after["image"].dtype == torch.float32
        np.testing.assert_allclose(after["image"].numpy(), expected, atol=2e-5)
        assert torch.allclose(after["image"].affine, before["image"].affine)
        assert abs(float(after["image"].mean())) < 1e-5 and abs(float(after["image"].std(unbiased=False)) - 1) < 1e-4
    ct = raw[0]["image"].numpy().astype(np.float64)
    assert ct.max() > 500  # the metal voxel survives resampling ...
    clipped = np.clip(ct, -991, 500)  # ... and is clipped to 500 HU before the z-score
    assert float(normalised[0]["image"].max()) == pytest.approx((500 - clipped.mean()) / clipped.std(), abs=1e-4)
    constant = HermesNormalizeIntensityd()({"image": torch.full((1, 4, 4, 4), 7.0), "modality_index": -1})
    assert torch.equal(constant["image"], torch.zeros(1, 4, 4, 4))
    with pytest.raises(KeyError, match="needs the item's 'modality_index'"):
        HermesNormalizeIntensityd()({"image": torch.zeros(1, 2, 2, 2)})


def test_label_becomes_one_channel_per_task(cases: list[dict]) -> None:
    sample = Compose(_preprocess())(cases[0])
    label_map = sample["label"].clone()
    out = LabelToTaskChannelsd(keys="label")(sample)
    channels = out["label"]
    assert isinstance(channels, MetaTensor) and channels.dtype == torch.uint8
    assert channels.shape == (2, *label_map.shape[1:])
    assert torch.equal(channels[0], (label_map[0] == 1).to(torch.uint8))
    assert torch.equal(channels[1], (label_map[0] == 2).to(torch.uint8))
    assert int(channels[1].sum()) > 0 and int(channels[0].sum()) > int(channels[1].sum())
    assert torch.allclose(channels.affine, label_map.affine)
    # amos_mr: background label 14 is 0 everywhere, the 13 channels follow label values 1..13
    amos = torch.tensor([0, 1, 13, 14, 2]).reshape(1, 5, 1, 1)
    split = LabelToTaskChannelsd(keys="label")({"label": amos, "task_label_values": list(range(1, 14))})["label"]
    assert split.shape == (13, 5, 1, 1)
    assert split[:, 3].sum() == 0 and split[0, 1] == 1 and split[12, 2] == 1 and split[1, 4] == 1
    with pytest.raises(ValueError, match="expects a label map with one channel"):
        LabelToTaskChannelsd(keys="label")({"label": torch.zeros(2, 3, 3, 3), "task_label_values": [1]})


def test_dataset_probability_decides_each_application() -> None:
    wrapped = RandomizeByDatasetProbd(RandShiftIntensityd(keys="image", offsets=(1.0, 2.0), prob=0.05))
    assert wrapped.transform.prob == 1.0  # the item's probability is the only one
    wrapped.set_random_state(seed=3)
    image = torch.zeros(1, 2, 2, 2)
    for prob, low, high in ((0.0, 0, 0), (1.0, 400, 400), (0.2, 50, 110)):  # 0.2 * 400 = 80 ± 4.5 sigma
        changed = sum(bool(wrapped({"image": image, "intensity_aug_prob": prob})["image"].abs().sum() > 0) for _ in range(400))
        assert low <= changed <= high, (prob, changed)
    first = [float(wrapped.set_random_state(7)({"image": image, "intensity_aug_prob": 0.5})["image"].mean()) for _ in range(2)]
    again = [float(wrapped.set_random_state(7)({"image": image, "intensity_aug_prob": 0.5})["image"].mean()) for _ in range(2)]
    assert first == again
    with pytest.raises(KeyError, match="needs the item's 'intensity_aug_prob'"):
        wrapped({"image": image})
    assert torch.equal(RandomizeByDatasetProbd(wrapped.transform, default_prob=0.0)({"image": image})["image"], image)


def test_training_chain_and_collate_on_nifti(cases: list[dict]) -> None:
    crop, margin = 16, 6
    chain = _train_chain(crop, margin)
    chain.set_random_state(seed=0)
    samples = [chain(item) for item in cases for _ in range(2)]
    for sample, n_tasks in zip(samples, (2, 2, 4, 4)):
        assert sample["image"].shape == (1, crop, crop, crop) and sample["image"].dtype == torch.float32
        assert torch.isfinite(sample["image"]).all()
        assert sample["label"].shape == (n_tasks, crop, crop, crop) and sample["label"].dtype == torch.uint8
        assert set(torch.unique(sample["label"]).tolist()) <= {0, 1}
        assert sample["label"].sum(dim=0).max() <= 1  # tasks of one label map never overlap
        assert sample["task_index"].dtype == torch.long and sample["modality_index"].dtype == torch.long
    assert samples[2]["task_index"].tolist() == [38, 39, 40, 41] and int(samples[2]["modality_index"]) == 3
    assert samples[2]["label"][2:].sum() == 0  # chaos kidneys (labels 2, 3) are absent from this label map

    batch = pad_tasks_collate(samples)
    assert batch["image"].shape == (4, 1, crop, crop, crop) and isinstance(batch["image"], MetaTensor)
    assert batch["task_index"].tolist() == [[0, 1, -1, -1], [0, 1, -1, -1], [38, 39, 40, 41], [38, 39, 40, 41]]
    assert batch["label"].shape == (4, 4, crop, crop, crop) and batch["label"].dtype == torch.uint8
    assert batch["label"][:2, 2:].sum() == 0
    assert torch.equal(batch["label"][0, :2], samples[0]["label"].as_tensor())
    assert batch["modality_index"].tolist() == [0, 0, 3, 3]
    assert batch["dataset"] == ["lits", "lits", "chaos", "chaos"]
    assert batch["task_label_values"] == [[1, 2], [1, 2], [1, 2, 3, 4], [1, 2, 3, 4]]


def test_collate_flattens_multi_crop_lists(cases: list[dict]) -> None:
    crops = Compose(_preprocess() + [
        RandCropByPosNegLabeld(keys=KEYS, label_key="label", spatial_size=(8, 8, 8), num_samples=2),
        LabelToTaskChannelsd(keys="label"),
        EnsureTyped(keys=["task_index", "modality_index"], dtype=torch.long, track_meta=False),
    ])
    crops.set_random_state(seed=1)
    batch = pad_tasks_collate([crops(cases[0]), crops(cases[1])])  # each a list of 2 crops
    assert batch["image"].shape == (4, 1, 8, 8, 8)
    assert batch["label"].shape == (4, 4, 8, 8, 8)
    assert batch["task_index"][:, 2:].tolist() == [[-1, -1], [-1, -1], [40, 41], [40, 41]]
    assert isinstance(batch["label"], MetaTensor) and batch["label"].affine.shape == (4, 4, 4)
    with pytest.raises(ValueError, match="a label has 3 channels but its sample lists 2 tasks"):
        pad_tasks_collate([{"label": torch.zeros(3, 2, 2, 2), "task_index": torch.tensor([0, 1])}])
