"""Hermes transforms on NIfTI files written to disk, the published training chain end to end, and batch collation."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    OneOf,
    EnsureChannelFirstd,
    EnsureTyped,
    Invertd,
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

from scripts.data.collate import pad_tasks_collate
from scripts.data.datalist import read_datalist
from scripts.data.spatial import CropToLabelBoxd
from scripts.data.transforms import HermesNormalizeIntensityd, LabelToTaskChannelsd, RandomizeByDatasetProbd
from scripts.registry import TaskRegistry

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
    return read_datalist(datalist, registry, ["training"], label_cache=None).checked().section("training")


def _preprocess(axcodes: str = "RAS") -> list:
    return [
        LoadImaged(keys=KEYS),
        EnsureChannelFirstd(keys=KEYS),
        Orientationd(keys=KEYS, axcodes=axcodes, labels=None),
        Spacingd(keys=KEYS, pixdim=1.5, mode=("bilinear", "nearest")),
        HermesNormalizeIntensityd(keys="image", modality_key="modality_index"),
    ]


def _train_chain(crop: int, margin: int) -> Compose:
    """The chain documented in scripts/data/transforms.py, with a small crop."""
    def by_dataset(transform):
        return RandomizeByDatasetProbd(transform, prob_key="intensity_aug_prob")

    preprocess = _preprocess("SPL")
    return Compose(preprocess[:-1] + [CropToLabelBoxd(keys=KEYS), preprocess[-1]] + [
        SpatialPadd(keys=KEYS, spatial_size=crop),
        RandSpatialCropd(keys=KEYS, roi_size=crop + margin),
        OneOf([RandAffined(keys=KEYS, spatial_size=[crop] * 3, prob=1.0, rotate_range=(math.pi / 6,) * 3,
                           scale_range=((-0.3, 1 / 0.7 - 1),) * 3, shear_range=(0.1,) * 6,
                           mode=("bilinear", "nearest"), padding_mode="zeros"),
               RandSpatialCropd(keys=KEYS, roi_size=crop)], weights=[0.5, 0.5]),
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
    # the longest list plus one null column: every sample carries at least one -1, as the published model saw
    assert batch["task_index"].tolist() == [[0, 1, -1, -1, -1], [0, 1, -1, -1, -1], [38, 39, 40, 41, -1],
                                            [38, 39, 40, 41, -1]]
    assert batch["label"].shape == (4, 5, crop, crop, crop) and batch["label"].dtype == torch.uint8
    assert batch["label"][:2, 2:].sum() == 0 and batch["label"][:, 4].sum() == 0
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
    assert batch["label"].shape == (4, 5, 8, 8, 8)
    assert batch["task_index"][:, 2:].tolist() == [[-1, -1, -1], [-1, -1, -1], [40, 41, -1], [40, 41, -1]]
    assert isinstance(batch["label"], MetaTensor) and batch["label"].affine.shape == (4, 4, 4)
    with pytest.raises(ValueError, match="a label has 3 channels but its sample lists 2 tasks"):
        pad_tasks_collate([{"label": torch.zeros(3, 2, 2, 2), "task_index": torch.tensor([0, 1])}])


def test_train_json_chain_sampler_collate_and_prepare_batch(cases: list[dict], registry: TaskRegistry,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain as configs/train.json builds it (the shared load transforms, crops, augmentation,
    task channels), through its weighted sampler and pad_tasks_collate, into the prepare step's inputs and targets."""
    from monai.bundle import ConfigParser

    from scripts.training.batch import HermesTargets

    folder = Path(cases[0]["image"]).parent
    datalist = folder / "train_and_validation.json"
    items = [{"image": "ct.nii.gz", "label": "label.nii.gz", "dataset": "lits"},
             {"image": "mr.nii.gz", "label": "label.nii.gz", "dataset": "chaos", "modality": "t2"}]
    datalist.write_text(json.dumps({"training": items, "validation": items[:1]}))
    monkeypatch.chdir(Path(__file__).resolve().parents[1] / "bundle")  # as a user runs it
    parser = ConfigParser()
    parser.read_config("configs/train.json")
    parser.update({"datalist": str(datalist), "roi_size": [16, 16, 16], "block_margin": 6, "batch_size": 4,
                   "iterations_per_epoch": 1, "num_workers": 0, "cache_rate": 0.0})
    loader = parser.get_parsed_content("train#dataloader")
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 1, 16, 16, 16) and batch["label"].shape[:1] == (4,)
    assert batch["label"].shape[2:] == (16, 16, 16) and set(torch.unique(batch["label"]).tolist()) <= {0, 1}
    for tasks, dataset in zip(batch["task_index"].tolist(), batch["dataset"]):
        assert tasks[: len(registry.task_ids(dataset))] == registry.task_ids(dataset)
        assert len(tasks) > len(registry.task_ids(dataset))  # at least one null token
        assert all(t == -1 for t in tasks[len(registry.task_ids(dataset)):])
    image, targets, args, _ = parser.get_parsed_content("prepare_batch")(batch, device="cpu")
    assert isinstance(targets, HermesTargets) and not isinstance(image, MetaTensor)
    assert [list(registry.datasets)[i] for i in targets.dataset_index.tolist()] == batch["dataset"]
    assert torch.equal(args[0], batch["task_index"]) and args[1].shape == (4,)


def test_every_collated_sample_carries_a_null_task() -> None:
    """Mixed and one-dataset batches alike: the longest list plus one -1 column (labels get an empty channel)."""
    def sample(tasks: list[int]) -> dict:
        return {"image": torch.zeros(1, 2, 2, 2), "label": torch.ones(len(tasks), 2, 2, 2, dtype=torch.uint8),
                "task_index": torch.tensor(tasks), "dataset": "d"}

    mixed = pad_tasks_collate([sample([4, 5, 6]), sample([0, 1]), sample([2, 3])])
    assert mixed["task_index"].tolist() == [[4, 5, 6, -1], [0, 1, -1, -1], [2, 3, -1, -1]]
    assert bool((mixed["task_index"] == -1).any(dim=1).all())
    assert mixed["label"].shape == (3, 4, 2, 2, 2)
    assert mixed["label"][:, 3].sum() == 0 and mixed["label"][1:, 2].sum() == 0 and mixed["label"][0, :3].all()
    one_dataset = pad_tasks_collate([sample([0, 1]), sample([0, 1])])
    assert one_dataset["task_index"].tolist() == [[0, 1, -1], [0, 1, -1]]
    assert one_dataset["label"].shape == (2, 3, 2, 2, 2) and one_dataset["label"][:, 2].sum() == 0
    validation = pad_tasks_collate([sample([0, 1])])  # batch size 1: the dataset's full list and exactly one -1
    assert validation["task_index"].tolist() == [[0, 1, -1]] and validation["label"].shape[1] == 3


# ------------------------------------------------------------------------ foreground crop, slice spacing, blocks
def _box_item(spacing: tuple, margin, min_size=None, native: bool = False, shape=(64, 64, 64),
              box=((20, 30), (30, 40), (35, 45)), value: int = 1) -> dict:
    """An image whose voxels hold their flat index (so a crop's first voxel says where it starts) and a label box."""
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    label = torch.zeros(1, *shape)
    label[(0, *(slice(a, b) for a, b in box))] = value
    image = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(1, *shape)
    return {"image": MetaTensor(image, affine=affine), "label": MetaTensor(label, affine=affine),
            "crop_margin": margin, "crop_min_size": min_size, "task_label_values": [1, 2],
            "keep_native_slice_spacing": native}


def _crop_start_end(out: dict, shape=(64, 64, 64)) -> tuple[list[int], list[int]]:
    start = [int(v) for v in np.unravel_index(int(out["image"][0, 0, 0, 0]), shape)]
    return start, [s + n for s, n in zip(start, out["image"].shape[1:])]


def test_crop_to_label_box_margins_on_the_training_grid() -> None:
    crop = CropToLabelBoxd(keys=KEYS)
    out = crop(_box_item((1.5, 1.5, 1.5), [10, 20, 30]))  # the published grid: margins as declared, clipped
    assert _crop_start_end(out) == ([10, 10, 5], [40, 60, 64])
    assert out["label"].shape == out["image"].shape and int(out["label"].sum()) == 1000
    assert torch.allclose(out["image"].affine[:3, 3], torch.tensor([15.0, 15.0, 7.5], dtype=torch.float64))
    coarse = crop(_box_item((3.0, 3.0, 3.0), [10, 20, 30]))  # 3 mm: half the voxels, the same millimetres
    assert _crop_start_end(coarse) == ([15, 20, 20], [35, 50, 60])
    odd = crop(_box_item((2.0, 2.0, 2.0), [3, 3, 3]))  # 4.5 mm = 2.25 voxels: rounded up, never less context
    assert _crop_start_end(odd) == ([17, 27, 32], [33, 43, 48])
    # at least 128 published voxels of context (autoPET): the box grows by half the shortfall on both sides
    widened = crop(_box_item((1.5, 1.5, 1.5), [2, 2, 2], min_size=[30, 30, 30]))
    assert _crop_start_end(widened) == ([8, 18, 23], [42, 52, 57])
    for unchanged in (_box_item((1.5,) * 3, None),  # no crop declared (brain structures)
                      _box_item((1.5,) * 3, [5, 5, 5], box=((0, 0), (0, 0), (0, 0)))):  # nothing labelled
        assert crop(unchanged)["image"].shape == (1, 64, 64, 64)
    background = crop(_box_item((1.5,) * 3, [0, 0, 0], value=14))  # a value that is no task never sets the box
    assert background["image"].shape == (1, 64, 64, 64)
    with pytest.raises(KeyError, match="needs the item's \\['crop_margin'\\]"):
        crop({k: v for k, v in _box_item((1.5,) * 3, [1, 1, 1]).items() if k != "crop_margin"})


def test_native_slice_spacing_resamples_in_plane_only_and_inverts() -> None:
    from scripts.data.spatial import DatasetSpacingd

    affine = torch.diag(torch.tensor([2.5, 1.0, 0.8, 1.0], dtype=torch.float64))

    def item(native: bool) -> dict:
        return {"image": MetaTensor(torch.rand(1, 10, 21, 30), affine=affine),
                "label": MetaTensor(torch.zeros(1, 10, 21, 30), affine=affine), "keep_native_slice_spacing": native}

    on = DatasetSpacingd(keys=KEYS, pixdim=[1.5, 1.5, 1.5], mode=("bilinear", "nearest"), native_slices=True)
    off = DatasetSpacingd(keys=KEYS, pixdim=1.5, mode=("bilinear", "nearest"), native_slices=False)
    kept, resampled, switched_off = on(item(True)), on(item(False)), off(item(True))
    assert kept["image"].pixdim.tolist() == pytest.approx([2.5, 1.5, 1.5]) and kept["image"].shape[1] == 10
    for out in (resampled, switched_off):
        assert out["image"].pixdim.tolist() == pytest.approx([1.5, 1.5, 1.5]) and out["label"].shape[1] == 16
    for transform, out in ((on, kept), (on, resampled), (off, switched_off)):
        pred = MetaTensor(torch.rand(2, *out["image"].shape[1:]), affine=out["image"].affine)
        inverted = Invertd(keys="pred", transform=Compose([transform]), orig_keys="image")({**out, "pred": pred})
        assert inverted["pred"].shape == (2, 10, 21, 30)  # what evaluation does to its predictions
        back = Compose([transform]).inverse(out)
        assert back["image"].shape == (1, 10, 21, 30)
        assert back["image"].pixdim.tolist() == pytest.approx([2.5, 1.0, 0.8])
    # margins along a slice axis kept native count native slices; otherwise they are converted from 1.5 mm
    thick = ((4.0, 1.5, 1.5), [10, 10, 10])
    assert _crop_start_end(CropToLabelBoxd(keys=KEYS, native_slices=True)(_box_item(*thick, native=True)))[0] \
        == [10, 20, 25]
    assert _crop_start_end(CropToLabelBoxd(keys=KEYS, native_slices=False)(_box_item(*thick, native=True)))[0] \
        == [16, 20, 25]


def _block_positions(affine_prob: float, draws: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list, int]:
    """train.json's spatial transforms (window 8, block 14) on a 20³ image of flat indices: the start of every
    output that is a plain crop, and how many outputs were resampled by the random affine."""
    from monai.bundle import ConfigParser

    monkeypatch.chdir(Path(__file__).resolve().parents[1] / "bundle")
    parser = ConfigParser()
    parser.read_config("configs/train.json")
    parser.update({"roi_size": [8, 8, 8], "block_margin": 6, "affine_prob": affine_prob})
    from scripts.data.augmentation import spatial_augmentation

    settings = ("keys", "roi_size", "block_margin", "affine_prob", "mode")  # as train#augmentation gives them
    chain = Compose(spatial_augmentation(**{k: parser.get_parsed_content(f"train#augmentation#{k}") for k in settings}))
    chain.set_random_state(seed=0)
    image = torch.arange(20 ** 3, dtype=torch.float32).reshape(1, 20, 20, 20)
    starts, resampled = [], 0
    for _ in range(draws):
        out = chain({"image": MetaTensor(image.clone()), "label": MetaTensor(torch.zeros(1, 20, 20, 20))})
        assert out["image"].shape == (1, 8, 8, 8)
        start = np.unravel_index(int(out["image"][0, 0, 0, 0]), (20, 20, 20))
        window = image[0, start[0]:start[0] + 8, start[1]:start[1] + 8, start[2]:start[2] + 8]
        if window.shape == (8, 8, 8) and torch.equal(out["image"][0].as_tensor(), window):
            starts.append(start)
        else:
            resampled += 1
    return starts, resampled


def test_window_is_random_inside_the_block_when_the_affine_is_not_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Published: without the affine a random window anywhere in the block, so windows reach the outer voxels
    (a centre crop of the block would start only at 3..9 here, never at 0..2 or 10..12)."""
    starts, resampled = _block_positions(0.0, 400, monkeypatch)
    assert resampled == 0
    positions = np.asarray(starts)
    assert positions.min(axis=0).tolist() == [0, 0, 0] and positions.max(axis=0).tolist() == [12, 12, 12]
    starts, resampled = _block_positions(0.5, 200, monkeypatch)
    assert 70 <= resampled <= 130, resampled  # the affine drawn with probability 0.5 (±4 sigma)


def test_the_grid_spacing_is_one_positive_size_or_three() -> None:
    from scripts.data.spatial import checked_spacing
    from scripts.errors import SetupError

    assert checked_spacing(1.5) == [1.5, 1.5, 1.5] and checked_spacing([3, 2, 1]) == [3.0, 2.0, 1.0]
    for bad in ([0, 1, 1], [1, 1], [1, 1, 1, 1], -1.5, ["a", 1, 1], [float("nan")] * 3, [True, 1, 1]):
        with pytest.raises(SetupError, match=re.escape(f"--spacing {bad}: expected the voxel size in mm")):
            checked_spacing(bad)
