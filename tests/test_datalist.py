"""Datalist loading on real NIfTI files: resolved paths, added task fields, every bad item reported; weighted sampling."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from unittest.mock import patch

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.data.datalist import DatalistError, own_registries, read_datalist
from scripts.data.sampling import dataset_weighted_sampler, item_weights
from scripts.registry import TaskRegistry


@pytest.fixture(scope="module")
def registry(bundle_root: Path) -> TaskRegistry:
    return TaskRegistry.load(bundle_root / "configs" / "task_registry.json")


def _nifti(path: Path, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 2.0)) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))
    return path


def _label(values: list[int], shape: tuple[int, int, int] = (8, 8, 4), dtype: type = np.uint8) -> np.ndarray:
    label = np.zeros(shape, dtype=dtype)
    for i, value in enumerate(values):
        label[i, : i + 2, 1] = value
    return label


@pytest.fixture()
def case_dir(tmp_path: Path) -> Path:
    """Images and labels of four datasets in <tmp>/cases, the datalist in <tmp>."""
    cases = tmp_path / "cases"
    cases.mkdir()
    image = np.random.default_rng(0).normal(size=(8, 8, 4)).astype(np.float32)
    for name, values in {"lits": [1, 2], "amos_mr": [1, 13, 14, 15], "chaos": [1, 4], "kits": [2]}.items():
        _nifti(cases / f"{name}.nii.gz", image)
        _nifti(cases / f"{name}_gt.nii.gz", _label(values))
    return tmp_path


def _datalist(folder: Path, items: list[dict], section: str = "training") -> Path:
    path = folder / "datalist.json"
    path.write_text(json.dumps({section: items}))
    return path


def load_datalist(path: Path, registry: TaskRegistry, section: str = "training", **options) -> list[dict]:
    """One section, checked: what training does."""
    return read_datalist(path, registry, [section], **options).checked().section(section)


def test_items_get_paths_tasks_and_modality(case_dir: Path, registry: TaskRegistry) -> None:
    items = [
        {"image": "cases/lits.nii.gz", "label": "cases/lits_gt.nii.gz", "dataset": "lits", "case": "a"},
        {"image": "cases/amos_mr.nii.gz", "label": "cases/amos_mr_gt.nii.gz", "dataset": "amos_mr"},
        {"image": "cases/chaos.nii.gz", "label": "cases/chaos_gt.nii.gz", "dataset": "chaos", "modality": "t1_out"},
        {"image": str(case_dir / "cases/kits.nii.gz"), "dataset": "kits"},
    ]
    loaded = load_datalist(_datalist(case_dir, items), registry, label_cache=None, require_label=False)
    assert loaded[0]["image"] == str(case_dir / "cases" / "lits.nii.gz")
    assert loaded[0]["label"] == str(case_dir / "cases" / "lits_gt.nii.gz")
    assert loaded[0]["case"] == "a"  # user keys are kept
    assert loaded[0]["task_index"] == [0, 1] and loaded[0]["task_label_values"] == [1, 2]
    assert loaded[0]["modality_index"] == 0 and loaded[0]["intensity_aug_prob"] == 0.1
    # amos_mr: labels 14/15 are background labels of the dataset, its tasks stop at label 13
    assert loaded[1]["task_index"] == list(range(4, 17)) and loaded[1]["modality_index"] == -1
    assert loaded[1]["intensity_aug_prob"] == 0.2
    assert loaded[2]["task_index"] == [38, 39, 40, 41] and loaded[2]["modality_index"] == 2
    assert "label" not in loaded[3] and loaded[3]["task_index"] == [2, 3]


def test_every_bad_item_is_reported_once_with_index_and_image(case_dir: Path, registry: TaskRegistry) -> None:
    _nifti(case_dir / "cases" / "float_gt.nii.gz", _label([1], dtype=np.float32) * 0.5)
    _nifti(case_dir / "cases" / "small_gt.nii.gz", _label([1], shape=(8, 8, 3)))
    items = [
        {"image": "cases/lits.nii.gz", "label": "cases/lits_gt.nii.gz", "dataset": "lits"},
        {"image": "cases/lits.nii.gz", "label": "cases/lits_gt.nii.gz", "dataset": "litz"},
        {"image": "cases/gone.nii.gz", "label": "cases/lits_gt.nii.gz", "dataset": "lits"},
        {"image": "cases/amos_mr.nii.gz", "label": "cases/amos_mr_gt.nii.gz", "dataset": "lits"},
        {"image": "cases/chaos.nii.gz", "label": "cases/chaos_gt.nii.gz", "dataset": "chaos"},
        {"image": "cases/lits.nii.gz", "label": "cases/float_gt.nii.gz", "dataset": "lits"},
        {"image": "cases/lits.nii.gz", "label": "cases/small_gt.nii.gz", "dataset": "lits"},
        {"image": "cases/lits.nii.gz", "label": "cases/lits_gt.nii.gz"},
        {"image": "cases/kits.nii.gz", "dataset": "kits"},
    ]
    path = case_dir / "datalist.json"
    path.write_text(json.dumps({"training": items, "validation": []}))
    with pytest.raises(DatalistError) as err:  # every section is checked in the same pass
        read_datalist(path, registry, ["training", "validation", "testing"], label_cache=None).checked()
    message = str(err.value)
    assert message.startswith(f"datalist {path}: 10 problem(s):")
    assert "training item 0 " not in message
    assert "training item 1 (image cases/lits.nii.gz): unknown dataset 'litz'; the task registry knows [" in message
    assert (f"training item 2 (image cases/gone.nii.gz): image file {case_dir / 'cases' / 'gone.nii.gz'} does not "
            "exist") in message
    assert (
        f"training item 3 (image cases/amos_mr.nii.gz): label file {case_dir / 'cases' / 'amos_mr_gt.nii.gz'} has "
        "values [13, 14, 15] that are not classes of dataset 'lits' (its classes are [1, 2];" in message
    )
    assert ("training item 4 (image cases/chaos.nii.gz): dataset 'chaos' has several sequences "
            "['t1_in', 't1_out', 't2']") in message
    assert "training item 5 (image cases/lits.nii.gz): label file" in message and "non-integer values [0.5]" in message
    assert "training item 6 (image cases/lits.nii.gz): image size (8, 8, 4) differs from label size (8, 8, 3)" in message
    assert "training item 7 (image cases/lits.nii.gz): 'dataset' is missing" in message
    assert "training item 8 (image cases/kits.nii.gz): 'label' is missing" in message
    assert "section 'validation': is empty; add items or name another section" in message
    assert "section 'testing': missing (sections: ['training', 'validation'])" in message
    _every_problem_reaches_the_user(err.value, 10)


def _every_problem_reaches_the_user(error: Exception, count: int) -> None:
    """A workflow fails on the datalist inside MONAI's config resolution; without --debug the user still reads every
    problem (before the one-line summary), not only the first."""
    import contextlib
    import io

    from scripts.cli import report

    try:
        raise RuntimeError("Failed to evaluate ConfigExpression: $scripts.data.datalist.read_datalist(...)") from error
    except RuntimeError as wrapped:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            report(type(wrapped), wrapped, wrapped.__traceback__)
    lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
    assert lines[-1].startswith("error: datalist ") and f"{count} problem(s)" in lines[-1], lines
    assert "Traceback" not in stderr.getvalue()
    listed = [line for line in lines[:-1] if line.startswith("  - ")]
    assert len(listed) == count and all(str(p) in stderr.getvalue() for p in error.args[0].splitlines()[1:]), lines


def test_label_check_can_be_skipped_and_is_cached(case_dir: Path, registry: TaskRegistry, tmp_path: Path) -> None:
    label = case_dir / "cases" / "lits_gt.nii.gz"
    path = _datalist(case_dir, [{"image": "cases/lits.nii.gz", "label": "cases/lits_gt.nii.gz", "dataset": "lits"}])
    cache = tmp_path / "cache" / "label_values.json"
    load_datalist(path, registry, label_cache=cache)
    stored = json.loads(cache.read_text())
    assert stored[str(label)]["values"] == [0.0, 1.0, 2.0]
    # a changed label file (new modification time) is read again, not trusted from the cache
    _nifti(label, _label([1, 3]))
    os.utime(label, ns=(1_000_000_000, 1_000_000_000))
    with pytest.raises(DatalistError, match=r"has values \[3\] that are not classes of dataset 'lits'"):
        load_datalist(path, registry, label_cache=cache)
    assert json.loads(cache.read_text())[str(label)]["values"] == [0.0, 1.0, 3.0]
    assert load_datalist(path, registry, check_labels=False)[0]["task_index"] == [0, 1]
    # entries of files that are gone are dropped when the cache is next written
    (case_dir / "datalist.json").rename(case_dir / "datalist_old.json")
    label.unlink()
    _nifti(case_dir / "cases" / "new_gt.nii.gz", _label([1]))
    path = _datalist(case_dir, [{"image": "cases/lits.nii.gz", "label": "cases/new_gt.nii.gz", "dataset": "lits"}])
    load_datalist(path, registry, label_cache=cache)
    assert list(json.loads(cache.read_text())) == [str(case_dir / "cases" / "new_gt.nii.gz")]


def test_file_level_errors_repeats_and_own_registry(case_dir: Path, registry: TaskRegistry) -> None:
    path = _datalist(case_dir, [], section="training")
    with pytest.raises(DatalistError, match=r"section 'validation': missing \(sections: \['training'\]\)"):
        load_datalist(path, registry, section="validation")
    with pytest.raises(DatalistError, match=r"section 'training': is empty"):
        load_datalist(path, registry)
    with pytest.raises(DatalistError, match=r"nothing.json: no such file"):
        load_datalist(case_dir / "nothing.json", registry)
    item = {"image": "cases/lits.nii.gz", "label": "cases/lits_gt.nii.gz", "dataset": "lits"}
    read = read_datalist(_datalist(case_dir, [item, dict(item)]), registry, ["training"], label_cache=None)
    assert len(read.section("training")) == 1 and not read.problems
    assert [str(r) for r in read.repeats] == ["training item 1 (image cases/lits.nii.gz): repeats item 0; used once"]
    # a datalist names its own extra registry; its datasets then need no --task_registry_extra
    (case_dir / "my_tasks.json").write_text(json.dumps({"datasets": {"my_organs": {
        "modality": "ct", "sample_weight": 1.0, "intensity_aug_prob": 0.1}},
        "tasks": [{"id": 90, "dataset": "my_organs", "name": "organ", "label": 1},
                  {"id": 91, "dataset": "my_organs", "name": "lesion", "label": 2}]}))
    path.write_text(json.dumps({"task_registry": "my_tasks.json", "training": [{**item, "dataset": "my_organs"}]}))
    assert own_registries(path) == [str(case_dir / "my_tasks.json")]
    merged = TaskRegistry.load(registry.base_file, own_registries(path))
    assert load_datalist(path, merged, label_cache=None)[0]["task_index"] == [90, 91]
    path.write_text(json.dumps({"task_registry": "gone.json", "training": []}))
    with pytest.raises(DatalistError, match=r"its 'task_registry' .*gone.json does not exist"):
        own_registries(path)


def test_sampling_weights_follow_the_registry(registry: TaskRegistry) -> None:
    items = [{"dataset": "lits"}] * 6 + [{"dataset": "amos_ct"}] * 2 + [{"dataset": "autopet"}] * 2
    per_dataset = item_weights(items, registry)
    assert per_dataset.dtype == torch.float64
    assert torch.allclose(per_dataset[:6], torch.full((6,), 0.3 / 6, dtype=torch.float64))
    assert torch.allclose(per_dataset[6:8], torch.full((2,), 1.8 / 2, dtype=torch.float64))
    assert torch.allclose(item_weights(items, registry, "per_item")[:6], torch.full((6,), 0.3, dtype=torch.float64))

    sampler = dataset_weighted_sampler(items, registry, num_samples=4000, seed=0)
    drawn = Counter(items[i]["dataset"] for i in sampler)
    expected = {"lits": 0.3 / 2.2, "amos_ct": 1.8 / 2.2, "autopet": 0.1 / 2.2}
    for name, share in expected.items():  # within 4 binomial standard deviations
        assert abs(drawn[name] / 4000 - share) < 4 * (share * (1 - share) / 4000) ** 0.5, (name, drawn)

    # multi-GPU: each rank draws from the whole list with its own stream (seed + rank), as published
    ranks = []
    for rank in (0, 1):
        with patch("ignite.distributed.get_rank", return_value=rank):
            ranks.append(list(dataset_weighted_sampler(items, registry, 50, seed=1)))
    assert [len(r) for r in ranks] == [50, 50] and ranks[0] != ranks[1]
    assert all(0 <= i < len(items) for rank in ranks for i in rank)
    assert ranks[1] == list(dataset_weighted_sampler(items, registry, 50, seed=2))  # rank 1 of seed 1 = rank 0 of 2
    with pytest.raises(ValueError, match=r"item 1 \(image None\): unknown dataset 'nope'"):
        item_weights([{"dataset": "lits"}, {"dataset": "nope"}], registry)
