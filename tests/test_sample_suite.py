"""Built-in sample suite and synthetic phantoms: real fetch, real files, real geometry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
from scipy import ndimage

from scripts import phantoms
from scripts.data.datalist import own_registries, read_datalist
from scripts.errors import HermesError, SetupError
from scripts.io import nifti
from scripts.io.files import write_json
from scripts.registry import TaskRegistry
from scripts.sample_suite import cache, catalogue, conversion, phantom_datasets, sources
from scripts.sample_suite.errors import SampleDataError

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
BASE_REGISTRY = BUNDLE / "configs" / "task_registry.json"


def _load(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image


def _monai_nrrd(path: Path):
    from monai.transforms import LoadImage

    return LoadImage(image_only=True, reader="NrrdReader")(str(path))


def _checked(datalist: str | Path) -> tuple[TaskRegistry, object]:
    """The datalist read as training reads it: the base registry plus the registry the datalist names."""
    registry = TaskRegistry.load(BASE_REGISTRY, own_registries(datalist))
    return registry, read_datalist(datalist, registry, ["training", "validation"], label_cache=None).checked()


# ------------------------------------------------------------------------------------------- real sample suite
def test_datalist_items_load_and_pass_the_datalist_checks(sample_suite):
    registry, datalist = _checked(sample_suite["datalist"])
    root = Path(sample_suite["root"])
    raw = json.loads(Path(sample_suite["datalist"]).read_text())
    assert {item["dataset"] for item in datalist.section("training")} == {d.name for d in catalogue.DATASETS}
    assert {item["dataset"] for item in datalist.section("validation")} == {d.name for d in catalogue.DATASETS}
    # datasets with 2+ cases hold one case out; single-case datasets reuse it
    train_images = {item["image"] for item in raw["training"]}
    assert "sample_lung_ct/lung2_image.nii.gz" not in train_images
    assert "sample_brain_t1/brain2_image.nii.gz" not in train_images
    assert "sample_breast_mr/breast1_image.nii.gz" in train_images
    assert len(raw["validation"]) == len(catalogue.DATASETS)

    found_labels: dict[str, set[int]] = {}
    for item in raw["training"] + raw["validation"]:
        image, image_nii = _load(root / item["image"])
        label, label_nii = _load(root / item["label"])
        assert image.ndim == 3 and image.shape == label.shape, item
        assert label.dtype == np.uint8, item
        np.testing.assert_allclose(image_nii.affine, label_nii.affine, atol=1e-5)
        assert int(image_nii.header["sform_code"]) == 1 and int(image_nii.header["qform_code"]) == 1
        found_labels.setdefault(item["dataset"], set()).update(np.unique(label).tolist())
    for dataset in catalogue.DATASETS:
        assert found_labels[dataset.name] == {0, *registry.label_values(dataset.name)}, dataset.name


def test_datalists_name_their_own_registry_which_leaves_modalities_to_the_base(sample_suite, tmp_path):
    phantom = phantom_datasets.make_phantom_datasets(tmp_path / "p", n_cases=1, n_holdout=1, size=16)
    for result in (sample_suite, phantom):
        content = json.loads(Path(result["datalist"]).read_text())
        assert content["task_registry"] == "task_registry.json"  # relative to the datalist's folder
        assert own_registries(result["datalist"]) == [result["task_registry"]]
        # a workflow given the registry explicitly as well merges it once, not twice
        TaskRegistry.load(BASE_REGISTRY, [*own_registries(result["datalist"]), result["task_registry"]])
        assert "modalities" not in json.loads(Path(result["task_registry"]).read_text())


def test_lung_ct_geometry_intensities_and_tumour_position(sample_suite):
    root = Path(sample_suite["root"]) / "sample_lung_ct"
    for case, in_plane in (("lung1", 0.5703), ("lung2", 0.6270)):
        image, nii = _load(root / f"{case}_image.nii.gz")
        label, _ = _load(root / f"{case}_label.nii.gz")
        np.testing.assert_allclose(nii.header.get_zooms(), (in_plane, in_plane, 5.0), atol=1e-3)
        assert image.shape[:2] == (512, 512) and image.dtype == np.int16
        assert -1100 <= image.min() <= -900 and 1000 <= image.max() <= 4095  # air ... bone, in HU
        tumour = label > 0
        assert 500 < tumour.sum() < 100_000
        assert -500 < np.median(image[tumour]) < 200  # soft tissue, not air or bone
        # the tumour lies inside the patient: body = tissue above -400 HU with the lungs filled in, slice by slice
        body = np.stack([ndimage.binary_fill_holes(image[..., k] > -400) for k in range(image.shape[2])], axis=-1)
        assert body[tumour].mean() > 0.99
        assert body.mean() < 0.8  # and the body is not the whole field of view


@pytest.mark.parametrize("dataset, case", [("sample_lung_ct", "lung1"), ("sample_brain_t1", "brain1"),
                                           ("sample_breast_mr", "breast1")])
def test_nifti_geometry_matches_monai_reading_of_the_original_nrrd(sample_suite, dataset, case):
    root = Path(sample_suite["root"])
    for kind in ("image", "label"):
        original = _monai_nrrd(root / catalogue.RAW_PYRADIOMICS / f"{case}_{kind}.nrrd")
        array, nii = _load(root / dataset / f"{case}_{kind}.nii.gz")
        np.testing.assert_allclose(nii.affine, original.affine.numpy(), atol=1e-4)
        np.testing.assert_array_equal(array, original.numpy())
    if case == "lung1":  # LPS origin (-146, -325, -777.5) is RAS (146, 325, -777.5); axes run to L, P, S
        np.testing.assert_allclose(nii.affine[:3, 3], (146.0, 325.0, -777.5))
        assert nib.aff2axcodes(nii.affine) == ("L", "P", "S")


@pytest.mark.parametrize("space, sign", [("left-posterior-superior", (-1, -1, 1)),
                                         ("right-anterior-superior", (1, 1, 1))])
def test_oblique_nrrd_converts_like_monai_reads_it(tmp_path, space, sign):
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    directions = (rotation @ np.diag([0.7, 0.9, 2.5])).T  # rows: the direction vector of each array axis
    header = {"space": space, "space directions": directions, "space origin": np.array([10.0, -20.0, 30.0]),
              "kinds": ["domain"] * 3}
    image = np.arange(6 * 7 * 5, dtype=np.int16).reshape(6, 7, 5)
    label = (image % 3 == 0).astype(np.int16)
    nrrd.write(str(tmp_path / "img.nrrd"), image, header)
    nrrd.write(str(tmp_path / "lab.nrrd"), label, header)
    conversion.convert_nrrd_pair(tmp_path / "img.nrrd", tmp_path / "lab.nrrd", tmp_path / "img.nii.gz",
                                 tmp_path / "lab.nii.gz", {1: 1})
    array, nii = _load(tmp_path / "img.nii.gz")
    reference = _monai_nrrd(tmp_path / "img.nrrd")
    np.testing.assert_allclose(nii.affine, reference.affine.numpy(), atol=1e-5)
    np.testing.assert_array_equal(array, reference.numpy())
    assert array.dtype == np.int16  # the image keeps its type
    labels, label_nii = _load(tmp_path / "lab.nii.gz")
    np.testing.assert_array_equal(labels, label.astype(np.uint8))
    np.testing.assert_allclose(label_nii.affine, nii.affine)
    # voxel (1, 0, 0) sits one first-axis step from the origin; LPS -> RAS negates x and y
    expected = np.array([10.0, -20.0, 30.0]) + directions[0]
    np.testing.assert_allclose(nii.affine @ [1, 0, 0, 1], [*(np.array(sign) * expected), 1], atol=1e-5)


def test_colin27_groups_follow_the_aal_region_names_and_anatomy(sample_suite):
    root = Path(sample_suite["root"])
    raw_dir = root / catalogue.RAW_MRICRON
    aal, aal_nii = _load(raw_dir / "aal.nii.gz")
    t1_raw, _ = _load(raw_dir / "ch2.nii.gz")
    grouped, grouped_nii = _load(root / "sample_colin27_t1" / "colin27_label.nii.gz")
    t1, t1_nii = _load(root / "sample_colin27_t1" / "colin27_image.nii.gz")
    np.testing.assert_array_equal(t1, t1_raw)
    np.testing.assert_allclose(grouped_nii.affine, aal_nii.affine)
    np.testing.assert_allclose(t1_nii.affine, aal_nii.affine)
    assert set(np.unique(grouped).tolist()) == set(range(len(catalogue.AAL_GROUPS) + 1))
    np.testing.assert_array_equal(grouped > 0, aal > 0)  # every AAL voxel is in exactly one group

    names = {int(line.split()[0]): line.split()[1] for line in (raw_dir / "aal.nii.txt").read_text().splitlines()
             if line.strip()}
    value_of = {name: value for value, name in names.items()}
    group_names = [name for name, _ in catalogue.AAL_GROUPS]
    listed = json.loads((root / "sample_colin27_t1" / catalogue.AAL_GROUPS_FILE).read_text())
    assert sorted(r for regions in listed.values() for r in regions) == sorted(names.values())  # 116, each once
    expected = {"Thalamus_L": "deep grey nuclei", "Putamen_R": "deep grey nuclei", "Cerebelum_Crus1_R": "cerebellum",
                "Vermis_4_5": "cerebellum", "Precentral_L": "frontal lobe cortex", "Rectus_R": "frontal lobe cortex",
                "Angular_L": "parietal lobe cortex", "Precuneus_R": "parietal lobe cortex",
                "Fusiform_R": "temporal lobe cortex", "Heschl_L": "temporal lobe cortex",
                "Calcarine_L": "occipital lobe cortex", "Hippocampus_R": "insula and limbic grey matter",
                "Insula_L": "insula and limbic grey matter"}
    for region, group in expected.items():
        assert set(np.unique(grouped[aal == value_of[region]]).tolist()) == {group_names.index(group) + 1}, region

    def world_centroid(mask: np.ndarray) -> np.ndarray:
        return (aal_nii.affine @ np.append(np.argwhere(mask).mean(axis=0), 1.0))[:3]

    frontal, occipital, cerebellum = (world_centroid(grouped == group_names.index(g) + 1)
                                      for g in ("frontal lobe cortex", "occipital lobe cortex", "cerebellum"))
    assert frontal[1] > occipital[1] + 50  # frontal is anterior (RAS +y)
    assert cerebellum[2] < frontal[2] - 30  # cerebellum is inferior
    assert world_centroid(aal == value_of["Thalamus_L"])[0] < -5 < 5 < world_centroid(aal == value_of["Thalamus_R"])[0]


def test_aal_region_outside_every_group_is_named():
    assert conversion.aal_group_of("Thalamus_R") == 6
    with pytest.raises(SampleDataError, match="'Nucleus_X_L' matches 0 structure groups"):
        conversion.aal_group_of("Nucleus_X_L")


def test_synthetic_pet_is_suv_like_and_named_synthetic(sample_suite):
    root = Path(sample_suite["root"])
    registry = json.loads(Path(sample_suite["task_registry"]).read_text())
    assert registry["datasets"]["synthetic_pet"]["modality"] == "pet"
    assert "synthetic" in registry["datasets"]["synthetic_pet"]["source"]
    assert all("synthetic" in t["name"] for t in registry["tasks"] if t["dataset"] == "synthetic_pet")
    for case in next(d for d in catalogue.DATASETS if d.name == "synthetic_pet").cases:
        suv, nii = _load(root / "synthetic_pet" / f"{case}_image.nii.gz")
        lesions, _ = _load(root / "synthetic_pet" / f"{case}_label.nii.gz")
        assert suv.dtype == np.float32 and suv.shape == (96, 96, 96) and suv.min() >= 0.0
        np.testing.assert_allclose(nii.header.get_zooms(), (2.0, 2.0, 2.0))
        body = (suv > 0.3) & (lesions == 0)
        assert lesions.sum() > 50
        assert np.median(suv[lesions > 0]) > 3 * np.median(suv[body])  # hot lesions over a cool body
        assert suv.max() > 8  # brain / bladder hot spots


def test_registry_ids_are_fixed_new_and_merge_without_collision(sample_suite, tmp_path):
    extra = json.loads(Path(sample_suite["task_registry"]).read_text())
    assert extra == catalogue.sample_registry()  # the cached file is what the code writes today
    base = json.loads(BASE_REGISTRY.read_text())
    ids = [t["id"] for t in extra["tasks"]]
    assert ids == list(range(72, 72 + len(ids)))  # fixed order, deterministic
    assert not set(ids) & ({t["id"] for t in base["tasks"]} | set(base["reserved_ids"]))
    assert not set(extra["datasets"]) & set(base["datasets"])
    assert [(t["dataset"], t["name"]) for t in extra["tasks"][:3]] == [
        ("sample_lung_ct", "lung tumor"), ("sample_brain_t1", "brain lesion"), ("sample_breast_mr", "breast lesion")]
    for name, entry in extra["datasets"].items():
        assert entry["intensity_aug_prob"] == (0.1 if entry["modality"] in ("ct", "pet") else 0.2), name

    phantom = phantom_datasets.phantom_registry()
    phantom_file = write_json(phantom, tmp_path / "phantom_registry.json")
    merged = TaskRegistry.load(BASE_REGISTRY, [sample_suite["task_registry"], phantom_file])
    assert merged.num_tasks == max(t["id"] for t in phantom["tasks"]) + 1
    modality_index = {name: merged.item_fields(name)["modality_index"] for name in extra["datasets"]}
    assert modality_index == {"sample_lung_ct": 0, "synthetic_pet": 1, "sample_brain_t1": 2, "sample_colin27_t1": 2,
                              "sample_breast_mr": -1}
    assert [t.name for t in merged.tasks_of("sample_colin27_t1")] == [g for g, _ in catalogue.AAL_GROUPS]
    assert merged.task_ids("synthetic_phantom_b") == [97, 98]


def test_second_call_uses_the_cache_without_any_download(sample_suite, monkeypatch):
    root = Path(sample_suite["root"])
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["suite_version"] == catalogue.SUITE_VERSION and manifest["recipe"] == catalogue.recipe_digest()
    assert manifest["sources"]["pyradiomics"]["sha256"] == catalogue.PYRADIOMICS_SHA256
    assert len(manifest["sources"]["mricron-data"]["sha256"]) == 64
    assert not (root / catalogue.DOWNLOADS).exists()  # archives are dropped once everything is converted
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}

    def no_network(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess {args}")

    monkeypatch.setattr(subprocess, "run", no_network)
    again = cache.ensure_sample_suite(root)
    assert {k: again[k] for k in ("root", "datalist", "task_registry", "manifest")} == \
        {k: sample_suite[k] for k in ("root", "datalist", "task_registry", "manifest")}
    assert again["log"] == [f"reused the cached sample suite in {root}"]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps


def test_a_manifest_from_other_code_or_with_missing_files_means_rebuild(sample_suite, tmp_path):
    manifest = json.loads((Path(sample_suite["root"]) / "manifest.json").read_text())
    (tmp_path / "datalist.json").write_text("{}")
    for version, recipe, outputs, reused in (
            (manifest["suite_version"], manifest["recipe"], {"datalist.json": 2}, True),
            (manifest["suite_version"], "edited code", {"datalist.json": 2}, False),
            (1, manifest["recipe"], {"datalist.json": 2}, False),  # written by the first suite version
            (manifest["suite_version"], manifest["recipe"], {"datalist.json": 2, "raw/gone.nrrd": 5}, False),
            (manifest["suite_version"], manifest["recipe"], {"datalist.json": 3}, False)):
        write_json({**manifest, "suite_version": version, "recipe": recipe, "outputs": outputs},
                   tmp_path / "manifest.json")
        assert (cache.cached_manifest(tmp_path) is not None) == reused, (version, recipe, outputs)
    (tmp_path / "manifest.json").write_text('{"half a manifest')
    assert cache.cached_manifest(tmp_path) is None


def test_cli_prints_the_datalist(sample_suite, tmp_path):
    done = subprocess.run([sys.executable, "-m", "scripts.sample_suite", "--root", sample_suite["root"],
                           "--phantoms", str(tmp_path / "phantoms")], cwd=BUNDLE, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"datalist: {sample_suite['datalist']}" in done.stdout
    assert "reused the cached sample suite" in done.stdout
    assert f"phantom datalist: {tmp_path / 'phantoms' / 'datalist.json'}" in done.stdout
    assert (tmp_path / "phantoms" / "synthetic_phantom_b" / "case005_structures.nii.gz").is_file()


# --------------------------------------------------------------------------------------- failures, atomicity
def test_unreachable_registries_give_clear_errors(tmp_path, monkeypatch):
    assert issubclass(SampleDataError, HermesError)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(SampleDataError, match=r"could not download pyradiomics 3\.0\.1 .* from PyPI"):
        sources.download_pyradiomics(tmp_path / "cache")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SampleDataError, match="could not download mricron-data .* from the Debian archive"):
        sources.download_mricron_data(tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # no half download left behind


def test_corrupt_archive_and_bad_nrrd_are_named(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / catalogue.PYRADIOMICS_ARCHIVE).write_bytes(b"not the tarball")
    with pytest.raises(SampleDataError, match=r"pyradiomics-3\.0\.1\.tar\.gz: sha256 .* delete the file"):
        sources.download_pyradiomics(cache_dir)
    with pytest.raises(SampleDataError, match=r"pyradiomics-3\.0\.1\.tar\.gz: cannot read the pyradiomics source"):
        sources.extract_pyradiomics_cases(cache_dir / catalogue.PYRADIOMICS_ARCHIVE, tmp_path / "raw", ("lung1",))

    def convert(image: str, label: str) -> None:
        conversion.convert_nrrd_pair(tmp_path / image, tmp_path / label, tmp_path / "a.nii.gz", tmp_path / "b.nii.gz",
                                     {1: 1})

    image = np.zeros((4, 4, 4), dtype=np.int16)
    nrrd.write(str(tmp_path / "plain.nrrd"), image)  # no space information
    with pytest.raises(SampleDataError, match=r"plain\.nrrd: not a 3D NRRD with 'space directions'"):
        convert("plain.nrrd", "plain.nrrd")
    header = {"space": "left-posterior-superior", "space directions": np.eye(3), "space origin": np.zeros(3)}
    nrrd.write(str(tmp_path / "img.nrrd"), image, header)
    nrrd.write(str(tmp_path / "lab.nrrd"), image + 2, header)
    with pytest.raises(SampleDataError, match=r"lab\.nrrd: unexpected label values \[2\]"):
        convert("img.nrrd", "lab.nrrd")
    for name, changed, message in (
            ("shifted", {"space origin": np.array([0.0, 0.0, 5.0])}, r"label grid .* does not match image .*img\.nrrd"),
            ("las", {"space": "left-anterior-superior"}, r"unsupported NRRD space 'left-anterior-superior'"),
            ("flat", {"space directions": np.diag([1.0, 1.0, 0.0])}, r"'space directions' must be three finite")):
        nrrd.write(str(tmp_path / f"{name}.nrrd"), image, {**header, **changed})
        with pytest.raises(SampleDataError, match=rf"{name}\.nrrd: {message}"):
            convert("img.nrrd", f"{name}.nrrd")
    (tmp_path / "junk.nrrd").write_bytes(b"\x00garbage")
    with pytest.raises(SampleDataError, match=r"junk\.nrrd: cannot read as NRRD"):
        convert("junk.nrrd", "junk.nrrd")
    assert not list(tmp_path.glob("*.nii.gz"))


def test_interrupted_conversion_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    header = {"space": "left-posterior-superior", "space directions": np.eye(3), "space origin": np.zeros(3)}
    ones = np.ones((4, 4, 4), dtype=np.int16)
    nrrd.write(str(tmp_path / "img.nrrd"), ones, header)
    nrrd.write(str(tmp_path / "lab.nrrd"), ones, header)
    out = tmp_path / "out"
    conversion.convert_nrrd_pair(tmp_path / "img.nrrd", tmp_path / "lab.nrrd", out / "img.nii.gz", out / "lab.nii.gz",
                                 {1: 1})
    nrrd.write(str(tmp_path / "img.nrrd"), ones * 7, header)

    def crash(image, filename, compression):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(nifti, "_save", crash)  # the NIfTI writer's one write, interrupted half way
    with pytest.raises(KeyboardInterrupt):
        conversion.convert_nrrd_pair(tmp_path / "img.nrrd", tmp_path / "lab.nrrd", out / "img.nii.gz",
                                     out / "lab.nii.gz", {1: 1})
    monkeypatch.undo()
    assert np.asarray(nib.load(str(out / "img.nii.gz")).dataobj).max() == 1
    assert sorted(p.name for p in out.iterdir()) == ["img.nii.gz", "lab.nii.gz"]


def test_a_users_folder_is_never_written_into(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SampleDataError, match="is not empty and is not a sample-suite folder"):
        cache.ensure_sample_suite(tmp_path)
    with pytest.raises(SampleDataError, match="is not empty and is not a synthetic phantom folder"):
        phantom_datasets.make_phantom_datasets(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    done = subprocess.run([sys.executable, "-m", "scripts.sample_suite", "--root", str(tmp_path)], cwd=BUNDLE,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(tmp_path) in last and "sample-suite folder" in last
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_parallel_runs_claim_one_new_folder_together(tmp_path):
    """torchrun ranks or parallel workers fetching the suite into one new folder at once: every claim succeeds (the
    marker is created exclusively, first), and a user's file next to no marker is still refused."""
    import threading

    for attempt in range(20):
        root = tmp_path / f"suite{attempt}"
        barrier, refused = threading.Barrier(6), []

        def claim(root=root, barrier=barrier, refused=refused):
            barrier.wait()
            try:
                cache.claim_folder(root, cache.ROOT_MARKER, "sample-suite")
            except SampleDataError as err:
                refused.append(err)

        threads = [threading.Thread(target=claim) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not refused, f"attempt {attempt}: {refused[0]}"
        assert [p.name for p in root.iterdir()] == [cache.ROOT_MARKER]
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(SampleDataError, match="is a file, not a sample-suite folder"):
        cache.claim_folder(tmp_path / "a_file", cache.ROOT_MARKER, "sample-suite")
    assert (tmp_path / "a_file").read_text() == "mine"


# ------------------------------------------------------------------------------------------ CT phantom datasets
def _arrays(result: dict, section: str) -> list[dict[str, np.ndarray]]:
    root = Path(result["root"])
    items = json.loads(Path(result["datalist"]).read_text())[section]
    return [{key: _load(root / item[key])[0] for key in ("image", "label", "structures")} | {"dataset": item["dataset"]}
            for item in items]


def test_phantoms_are_deterministic_and_hold_unannotated_structures(tmp_path):
    first = phantom_datasets.make_phantom_datasets(tmp_path / "a", n_cases=2, n_holdout=1, size=32, seed=0)
    second = phantom_datasets.make_phantom_datasets(tmp_path / "b", n_cases=2, n_holdout=1, size=32, seed=0)
    other = phantom_datasets.make_phantom_datasets(tmp_path / "c", n_cases=2, n_holdout=1, size=32, seed=1)
    assert first["structure_labels"] == phantoms.PHANTOM_STRUCTURES
    registry, datalist = _checked(first["datalist"])
    assert len(datalist.section("training")) == 4 and len(datalist.section("validation")) == 2
    assert all(min(registry.task_ids(d)) >= 72 for d in phantom_datasets.PHANTOM_DATASETS)

    cases, again, different = (_arrays(result, "training") for result in (first, second, other))
    for a, b, c in zip(cases, again, different):
        for key in ("image", "label", "structures"):
            np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a["structures"], c["structures"])

    hu, s = phantoms.PHANTOM_HU, phantoms.PHANTOM_STRUCTURES
    for case in cases + _arrays(first, "validation"):
        image, label, structures = case["image"], case["label"], case["structures"]
        assert image.shape == (32, 32, 32) and image.dtype == np.float32
        for name in ("organ", "box"):  # drawn in every image, whichever dataset annotates it
            region = structures == s[name]
            assert region.sum() > 30 and abs(image[region].mean() - hu[name]) < 10, name
        body = image[(structures == 0) & (image > -800)]
        assert abs(body.mean() - hu["body"]) < 10
        if case["dataset"] == "synthetic_phantom_a":
            np.testing.assert_array_equal(label, (structures == s["organ"]).astype(np.uint8))
            assert not (structures == s["marker"]).any()
        else:  # the organ is in the image but not in the label
            expected = (structures == s["box"]) * 1 + (structures == s["marker"]) * 2
            np.testing.assert_array_equal(label, expected)
            assert (structures == s["marker"]).sum() > 30 and not label[structures == s["organ"]].any()

    stamp = Path(first["datalist"]).stat().st_mtime_ns
    assert phantom_datasets.make_phantom_datasets(tmp_path / "a", n_cases=2, n_holdout=1, size=32, seed=0) == first
    assert Path(first["datalist"]).stat().st_mtime_ns == stamp  # reused, not rewritten
    phantom_datasets.make_phantom_datasets(tmp_path / "a", n_cases=1, n_holdout=1, size=32, seed=0)
    assert len(json.loads(Path(first["datalist"]).read_text())["training"]) == 2  # other arguments: rewritten


def test_interrupted_phantom_folder_is_ours_and_completed_next_time(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = phantom_datasets.write_nifti

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(phantom_datasets, "write_nifti", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        phantom_datasets.make_phantom_datasets(tmp_path / "p", n_cases=1, n_holdout=1, size=16)
    monkeypatch.undo()
    assert not (tmp_path / "p" / "datalist.json").exists()
    result = phantom_datasets.make_phantom_datasets(tmp_path / "p", n_cases=1, n_holdout=1, size=16)
    _checked(result["datalist"])


def test_phantom_anisotropic_size_and_bad_arguments(tmp_path):
    result = phantom_datasets.make_phantom_datasets(tmp_path / "p", n_cases=1, n_holdout=1, size=(16, 32, 32))
    case = _arrays(result, "validation")[0]
    assert case["image"].shape == (16, 32, 32)
    with pytest.raises(SetupError, match="n_cases and n_holdout"):
        phantom_datasets.make_phantom_datasets(tmp_path / "q", n_cases=0)
    with pytest.raises(SetupError, match="phantom size"):
        phantom_datasets.make_phantom_datasets(tmp_path / "r", size=(4, 32, 32))
    assert os.listdir(tmp_path) == ["p"]


def test_an_unwritable_home_says_what_to_do(tmp_path, monkeypatch):
    """HOME that cannot be written (a service account, a read-only container) used to end in a raw FileNotFoundError;
    the one line now names the folder and both ways out: HERMES_SAMPLE_DIR, or --datalist."""
    blocker = tmp_path / "not-a-folder"  # a path below a file cannot be created, not even by root
    blocker.write_text("")
    monkeypatch.setenv("HOME", str(blocker / "home"))
    monkeypatch.delenv("HERMES_SAMPLE_DIR", raising=False)
    with pytest.raises(SampleDataError) as err:
        cache.ensure_sample_suite()
    message = str(err.value)
    assert message.startswith(f"the sample suite's folder {blocker / 'home'}/.cache/") and "cannot be created" in message
    assert "HERMES_SAMPLE_DIR" in message and "--datalist" in message and "\n" not in message
