"""Task registry: the shipped file matches the published ids, extras merge, and every inconsistency is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.registry import Task, TaskRegistry, TaskRegistryError, companions_of, normalize_task_name, slug


@pytest.fixture(scope="module")
def registry_path(bundle_root: Path) -> Path:
    return bundle_root / "configs" / "task_registry.json"


@pytest.fixture(scope="module")
def registry(registry_path: Path) -> TaskRegistry:
    return TaskRegistry.load(registry_path)


def _write(tmp_path: Path, name: str, content: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return path


def _extra(datasets: dict | None = None, tasks: list | None = None) -> dict:
    return {
        "datasets": datasets
        if datasets is not None
        else {"my_spleen": {"modality": "ct", "sample_weight": 1.0, "intensity_aug_prob": 0.1}},
        "tasks": tasks if tasks is not None else [{"id": 72, "dataset": "my_spleen", "name": "spleen", "label": 1}],
    }


def test_shipped_registry_has_the_published_layout(registry: TaskRegistry) -> None:
    assert len(registry.datasets) == 11
    assert sorted({t.id for t in registry.tasks}) == list(range(71))
    assert registry.num_tasks == 72
    assert registry.task_ids("amos_ct") == list(range(4, 19))
    assert registry.task_ids("amos_mr") == list(range(4, 17))
    assert [t.name for t in registry.tasks_of("amos_mr")] == [t.name for t in registry.tasks_of("amos_ct")][:13]
    assert registry.tasks_of("lits") == [Task(0, "lits", "liver", 1), Task(1, "lits", "liver tumor", 2)]
    assert registry.task_by_id(70) == Task(70, "autopet", "lesion", 1)
    assert registry.item_fields("lits")["modality_index"] == 0
    assert registry.item_fields("autopet")["modality_index"] == 1
    assert registry.item_fields("brain_structure")["modality_index"] == 2
    assert registry.item_fields("mnm")["modality_index"] == 4
    assert registry.item_fields("amos_mr")["modality_index"] == -1
    assert registry.dataset_modality("amos_mr", "t2") == "t2"  # a user who knows the sequence may say so
    assert [registry.dataset_modality("chaos", s) for s in ("t1_in", "t1_out", "t2", "t1")] == ["t1", "t1", "t2", "t1"]
    assert registry.background_labels("amos_mr") == [14, 15]
    # the published preparation's crops (voxels at 1.5 mm, SPL axes) and autoPET's in-plane-only resampling
    geometry = {name: {key: registry.item_fields(name, "t2" if name == "chaos" else None)[key] for key in
                       ("crop_margin", "crop_min_size", "keep_native_slice_spacing")} for name in registry.datasets}
    assert geometry["amos_mr"] == {"crop_margin": [10, 30, 30], "crop_min_size": None,
                                   "keep_native_slice_spacing": False}
    assert geometry["kits"]["crop_margin"] == [20, 40, 30] and geometry["mnm"]["crop_margin"] == [20, 40, 40]
    assert geometry["brain_structure"]["crop_margin"] is None
    assert geometry["autopet"] == {"crop_margin": [20, 30, 30], "crop_min_size": [128, 128, 128],
                                   "keep_native_slice_spacing": True}
    assert all(geometry[n]["crop_margin"] == [20, 20, 20] for n in ("lits", "bcv", "chaos", "structseg_oar",
                                                                     "structseg_head_oar"))


def test_shipped_registry_agrees_with_the_published_facts(registry: TaskRegistry, bundle_root: Path) -> None:
    facts_path = bundle_root.parent.parent / "shared" / "reference" / "hermes_datasets.json"
    if not facts_path.is_file():
        pytest.skip(f"published facts not found at {facts_path} (they ship in ../shared beside the checkout)")
    facts = json.loads(facts_path.read_text())["datasets"]
    assert set(facts) == set(registry.datasets)
    for name, fact in facts.items():
        assert registry.task_ids(name) == fact["task_ids"], name
        assert registry.label_values(name) == list(range(1, len(fact["task_ids"]) + 1)), name
        assert registry.datasets[name]["sample_weight"] == fact["sample_weight"], name
        assert registry.datasets[name]["intensity_aug_prob"] == fact["intensity_aug_prob"], name
        if name != "chaos":  # chaos has one modality per sequence
            assert registry.item_fields(name)["modality_index"] == fact["modality"], name


def test_modality_errors_name_the_dataset(registry: TaskRegistry) -> None:
    with pytest.raises(KeyError, match="chaos.*several sequences"):
        registry.dataset_modality("chaos")
    with pytest.raises(KeyError, match="'flair' is not a sequence of dataset 'chaos'"):
        registry.dataset_modality("chaos", "flair")
    with pytest.raises(KeyError, match="dataset 'lits' is 'ct'; its items cannot be 't1'"):
        registry.dataset_modality("lits", "t1")
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        registry.tasks_of("nope")


def test_extra_registry_adds_tasks_after_72(registry_path: Path, tmp_path: Path) -> None:
    extra = _extra(
        datasets={
            "my_spleen": {"modality": "ct", "sample_weight": 1.0, "intensity_aug_prob": 0.1},
            "my_liver_mr": {"modality": {"a": "t1", "b": "t2"}, "sample_weight": 0.5, "intensity_aug_prob": 0.2,
                            "crop_margin": 12},
        },
        tasks=[
            {"id": 72, "dataset": "my_spleen", "name": "spleen", "label": 1},
            {"id": 74, "dataset": "my_liver_mr", "name": "liver lesion", "label": 2},
            {"id": 73, "dataset": "my_liver_mr", "name": "liver", "label": 1},
        ],
    )
    merged = TaskRegistry.load(registry_path, [_write(tmp_path, "extra.json", extra)])
    assert merged.num_tasks == 75
    assert merged.task_ids("my_liver_mr") == [73, 74]  # ordered by label, not file order
    assert merged.item_fields("my_liver_mr", "b")["modality_index"] == 3
    assert merged.item_fields("my_liver_mr", "b")["crop_margin"] == [12, 12, 12]  # one int: all three axes
    assert merged.item_fields("my_spleen")["crop_margin"] is None  # not declared: no crop
    assert merged.task_by_id(72) == Task(72, "my_spleen", "spleen", 1)
    assert merged.task_ids("lits") == [0, 1]
    assert merged.sources["my_spleen"].endswith("extra.json")
    # the same task may be shared by two new datasets when it is deliberately the same task
    shared = _extra(
        datasets={
            "site_a": {"modality": "ct", "sample_weight": 1.0, "intensity_aug_prob": 0.1},
            "site_b": {"modality": "ct", "sample_weight": 1.0, "intensity_aug_prob": 0.1},
        },
        tasks=[
            {"id": 80, "dataset": "site_a", "name": "spleen", "label": 1},
            {"id": 80, "dataset": "site_b", "name": "spleen", "label": 1},
        ],
    )
    both = TaskRegistry.load(registry_path, _write(tmp_path, "shared.json", shared))
    assert both.task_ids("site_a") == both.task_ids("site_b") == [80]


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            _extra(tasks=[
                {"id": 72, "dataset": "my_spleen", "name": "spleen", "label": 1},
                {"id": 73, "dataset": "my_spleen", "name": "spleen again", "label": 1},
            ]),
            r"label 1 of dataset 'my_spleen' already has a task",
        ),
        (
            _extra(tasks=[{"id": 5, "dataset": "my_spleen", "name": "spleen", "label": 1}]),
            r"ids below 72 belong to the published model",
        ),
        (
            _extra(tasks=[{"id": 71, "dataset": "my_spleen", "name": "spleen", "label": 1}]),
            r"id 71 is reserved",
        ),
        (
            _extra(datasets={"my_spleen": {"modality": "ultrasound", "sample_weight": 1, "intensity_aug_prob": 0.1}}),
            r"unknown modality \['ultrasound'\]",
        ),
        (
            _extra(datasets={"lits": {"modality": "ct", "sample_weight": 1, "intensity_aug_prob": 0.1}}, tasks=[]),
            r"dataset 'lits' is already defined differently in .*task_registry.json",
        ),
        (
            _extra(tasks=[{"id": 72, "dataset": "my_other", "name": "spleen", "label": 1}]),
            r"dataset 'my_other' is not defined in this file",
        ),
        (
            _extra(datasets={"my_spleen": {"modality": "ct", "sample_weight": 1.0}}),
            r"dataset 'my_spleen' lacks \['intensity_aug_prob'\]",
        ),
        (
            _extra(datasets={"my_spleen": {"modality": "ct", "sample_weight": 0, "intensity_aug_prob": 0.1}}),
            r"'sample_weight' must be a number > 0",
        ),
        (_extra(tasks=[]), r"datasets \['my_spleen'\] have no tasks"),
        (
            _extra(tasks=[{"id": 72, "dataset": "my_spleen", "name": "spleen", "label": 0}]),
            r"'label' must be an int > 0",
        ),
        (
            _extra(datasets={"my_spleen": {"modality": "ct", "sample_weight": 1, "intensity_aug_prob": 0.1,
                                           "crop_margin": [20, 20]}}),
            r"'crop_margin' must be null \(no crop\) or voxels >= 0",
        ),
        (
            _extra(datasets={"my_spleen": {"modality": "ct", "sample_weight": 1, "intensity_aug_prob": 0.1,
                                           "crop_min_size": 128}}),
            r"'crop_min_size' must be voxels >= 1 .* and needs a 'crop_margin'",
        ),
        (
            _extra(datasets={"my_spleen": {"modality": "ct", "sample_weight": 1, "intensity_aug_prob": 0.1,
                                           "keep_native_slice_spacing": "yes"}}),
            r"'keep_native_slice_spacing' must be true or false",
        ),
    ],
)
def test_bad_extra_registry_is_one_clear_error(registry_path: Path, tmp_path: Path, extra: dict, message: str) -> None:
    path = _write(tmp_path, "bad_extra.json", extra)
    with pytest.raises(TaskRegistryError, match=message) as err:
        TaskRegistry.load(registry_path, [path])
    assert str(path) in str(err.value)


def test_id_reused_for_another_task_is_refused(registry_path: Path, tmp_path: Path) -> None:
    first = _write(tmp_path, "first.json", _extra())
    second = _write(
        tmp_path,
        "second.json",
        _extra(
            datasets={"my_kidney": {"modality": "ct", "sample_weight": 1.0, "intensity_aug_prob": 0.1}},
            tasks=[{"id": 72, "dataset": "my_kidney", "name": "kidney", "label": 1}],
        ),
    )
    with pytest.raises(TaskRegistryError, match=r"second.json.*id 72 already means 'spleen', not 'kidney'"):
        TaskRegistry.load(registry_path, [first, second])


def test_base_file_errors_name_the_file(tmp_path: Path, registry_path: Path) -> None:
    base = json.loads(registry_path.read_text())
    base["tasks"].append({"id": 71, "dataset": "lits", "name": "spare", "label": 3})
    with pytest.raises(TaskRegistryError, match=r"base.json: tasks\[84\].*id 71 is reserved"):
        TaskRegistry.load(_write(tmp_path, "base.json", base))
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(TaskRegistryError, match=r"broken.json: not valid JSON"):
        TaskRegistry.load(broken)
    with pytest.raises(TaskRegistryError, match=r"missing.json: no such file"):
        TaskRegistry.load(tmp_path / "missing.json")
    changed = _write(tmp_path, "modalities.json", {"modalities": {"ct": 1, "us": 5}, **_extra()})
    with pytest.raises(TaskRegistryError, match=r"modalities.json: 'modalities' gives \{'ct': 1\} other prior rows"):
        TaskRegistry.load(registry_path, [changed])
    gap = _write(tmp_path, "gap.json", {"modalities": {"us": 7}, **_extra()})
    with pytest.raises(TaskRegistryError, match=r"gap.json: new modalities \{'us': 7\} must take the next prior rows 5"):
        TaskRegistry.load(registry_path, [gap])


def test_the_registry_owns_the_modality_table(registry: TaskRegistry) -> None:
    """Modality names, prior rows, the MR family, DICOM tags and head classes all come from the one registry file."""
    assert registry.num_modalities == 6 and registry.modalities == {"ct": 0, "pet": 1, "t1": 2, "t2": 3, "cine": 4,
                                                                    "mr": -1}
    assert [registry.modality_name(i) for i in (0, 1, 4, -1, 5)] == ["ct", "pet", "cine", "mr", "mr"]
    assert [registry.modality_of_head_class(k) for k in range(6)] == ["ct", "pet", "t1", "t2", "cine", "mr"]
    assert registry.modality_from_dicom("pt") == "pet" and registry.modality_from_dicom("US") is None
    assert registry.datasets_for_modality("mr") == ["amos_mr", "chaos", "mnm", "brain_structure"]
    assert registry.datasets_for_modality("t2") == ["chaos"]
    assert normalize_task_name("Right_Kidney") == "right kidney" and slug("amos_ct/liver") == "amos_ct-liver"


def test_a_new_modality_needs_only_the_registry_file(registry_path: Path, tmp_path: Path) -> None:
    base = json.loads(registry_path.read_text())
    base["modalities"]["us"] = 5  # the unknown-MRI row stays last: prior rows 0..5 and -1 -> 7 rows
    base["dicom_modalities"]["US"] = "us"
    base["datasets"]["my_us"] = {"modality": "us", "sample_weight": 1.0, "intensity_aug_prob": 0.1}
    base["tasks"].append({"id": 71, "dataset": "my_us", "name": "thyroid", "label": 1})
    base["reserved_ids"] = []
    registry = TaskRegistry.load(_write(tmp_path, "base.json", base))
    assert registry.num_modalities == 7 and registry.modality_from_dicom("US") == "us"
    assert registry.item_fields("my_us")["modality_index"] == 5 and registry.modality_of_head_class(6) == "mr"


def test_weights_carry_their_extra_tasks_in_a_companion_file(registry_path: Path, tmp_path: Path) -> None:
    extra = _write(tmp_path, "extra.json", _extra())
    registry = TaskRegistry.load(registry_path, [extra])
    weights = tmp_path / "model.pt"
    companion = registry.write_companion(weights)
    assert companion == tmp_path / "model.tasks.json" and companions_of(weights) == [str(companion)]
    again = TaskRegistry.load(registry_path, companions_of(weights))
    assert again.task_by_id(72) == Task(72, "my_spleen", "spleen", 1) and again.num_tasks == registry.num_tasks
    # evaluating the weights on their own training datalist names the same tasks twice: accepted when identical
    assert TaskRegistry.load(registry_path, [str(companion), str(extra)]).task_ids("my_spleen") == [72]
    assert TaskRegistry.load(registry_path).write_companion(weights) is None  # no extra tasks: no stale companion
    assert not companion.exists() and companions_of(weights) == []
