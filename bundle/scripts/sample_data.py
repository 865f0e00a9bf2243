"""Built-in sample suite: real CT/MRI cases from the package registries, as NIfTI with a datalist and task registry.

No hub download works where this bundle is tested, but PyPI and Debian do, and two packages carry real images:

* the pyradiomics 3.0.1 source tarball (BSD-3): chest CT ``lung1``/``lung2`` with a lung-tumour mask, contrast T1
  brain MRI ``brain1``/``brain2`` with a lesion mask, and a breast MRI crop ``breast1`` with a lesion mask (NRRD);
* Debian ``mricron-data`` (BSD-3): the Colin27 single-subject T1 (``ch2.nii.gz``) with the AAL atlas drawn on it,
  whose 116 regions are grouped here into seven structures (``AAL_GROUPS``).

A seeded synthetic PET phantom dataset (``synthetic_pet``) covers the modality no package ships.
``ensure_sample_suite`` fetches once into a cache folder (default ``$HERMES_SAMPLE_DIR`` or
``~/.cache/hermes_universal_segmentation/sample_suite``), converts NRRD (LPS) to NIfTI (RAS) keeping the scanner
geometry, and writes ``datalist.json`` plus an extra task registry (task ids from 72 up, fixed order). Every file is
written under a temporary name and renamed, and ``manifest.json`` (with the archives' sha256) is written last, so an
interrupted run is simply redone. Run ``python -m scripts.sample_data [--root DIR]`` from ``bundle/``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import nrrd
import numpy as np

from scripts.io_utils import sha256_of
from scripts.phantoms import MODALITIES, atomic_output, make_pet_phantom, write_json, write_nifti
from scripts.phantoms import make_phantom_datasets  # noqa: F401  (re-exported for the training learning test)

SUITE_VERSION = 1
FIRST_TASK_ID = 72
PYRADIOMICS_VERSION = "3.0.1"
PYRADIOMICS_ARCHIVE = f"pyradiomics-{PYRADIOMICS_VERSION}.tar.gz"
PYRADIOMICS_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
MRICRON_PACKAGE = "mricron-data"
MRICRON_TEMPLATES = "usr/share/mricron/templates"
MRICRON_FILES = ("ch2.nii.gz", "aal.nii.gz", "aal.nii.txt")
MANIFEST = "manifest.json"
ROOT_MARKER = ".hermes_sample_suite"
SYNTHETIC_PET_CASES = 3

# AAL region name (side suffix _L/_R removed) -> structure. Lobes follow the gyri's usual lobar assignment:
# precentral, paracentral lobule and Rolandic operculum go with the frontal lobe, postcentral and precuneus with
# the parietal lobe, fusiform, Heschl and the temporal poles with the temporal lobe; insula, cingulate gyrus,
# hippocampus, parahippocampal gyrus and amygdala form the limbic group; caudate, putamen, pallidum and thalamus the
# deep grey nuclei; all cerebellar hemisphere lobules and the vermis the cerebellum. Both hemispheres together.
AAL_GROUPS: tuple[tuple[str, str], ...] = (
    ("frontal lobe cortex", r"Precentral|Frontal_.+|Rolandic_Oper|Supp_Motor_Area|Olfactory|Rectus|Paracentral_Lobule"),
    ("parietal lobe cortex", r"Postcentral|Parietal_Sup|Parietal_Inf|SupraMarginal|Angular|Precuneus"),
    ("temporal lobe cortex", r"Temporal_.+|Heschl|Fusiform"),
    ("occipital lobe cortex", r"Occipital_.+|Calcarine|Cuneus|Lingual"),
    ("insula and limbic grey matter", r"Insula|Cingulum_.+|Hippocampus|ParaHippocampal|Amygdala"),
    ("deep grey nuclei", r"Caudate|Putamen|Pallidum|Thalamus"),
    ("cerebellum", r"Cerebelum_.+|Vermis(_.+)?"),
)


class SampleDataError(RuntimeError):
    """A sample source could not be fetched, verified or converted; the message names what and why."""


@dataclass(frozen=True)
class SampleDataset:
    """One dataset of the suite: where its cases come from and which tasks its labels carry."""

    name: str
    modality: str
    source: str
    cases: tuple[str, ...]
    tasks: tuple[str, ...]  # task names for label values 1..k
    validation_case: str


PYRADIOMICS_SOURCE = f"sample (pyradiomics {PYRADIOMICS_VERSION}, BSD-3)"
DATASETS: tuple[SampleDataset, ...] = (
    SampleDataset("sample_lung_ct", "ct", PYRADIOMICS_SOURCE, ("lung1", "lung2"), ("lung tumor",), "lung2"),
    SampleDataset("sample_brain_t1", "t1", PYRADIOMICS_SOURCE, ("brain1", "brain2"), ("brain lesion",), "brain2"),
    SampleDataset("sample_breast_mr", "mr", PYRADIOMICS_SOURCE, ("breast1",), ("breast lesion",), "breast1"),
    SampleDataset("sample_colin27_t1", "t1",
                  "sample (Debian mricron-data: Colin27 T1 with AAL atlas, BSD-3; cite Holmes 1998, Tzourio-Mazoyer 2002)",
                  ("colin27",), tuple(name for name, _ in AAL_GROUPS), "colin27"),
    SampleDataset("synthetic_pet", "pet", "synthetic (seeded PET-like phantom, scripts.phantoms)",
                  tuple(f"synthetic_pet{i}" for i in range(SYNTHETIC_PET_CASES)), ("synthetic lesion",), "synthetic_pet2"),
)


# ------------------------------------------------------------------------------------------------ small helpers
def default_root() -> Path:
    """Cache folder: ``$HERMES_SAMPLE_DIR`` if set, else ``~/.cache/hermes_universal_segmentation/sample_suite``."""
    env = os.environ.get("HERMES_SAMPLE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hermes_universal_segmentation" / "sample_suite"


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root`` so parallel test runs fetch once and the others reuse the result."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform; atomic writes still keep files whole
        yield
        return
    with open(root / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], what: str, registry: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a download command; turn any failure into one ``SampleDataError`` naming the package and registry."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SampleDataError(f"could not download {what} from {registry}: {err}") from err
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        message = " | ".join(detail[-3:]) if detail else f"exit status {done.returncode}"
        raise SampleDataError(f"could not download {what} from {registry}: {message}")
    return done


# ---------------------------------------------------------------------------------------------------- fetching
def download_pyradiomics(cache: Path) -> Path:
    """Fetch the pyradiomics source tarball from PyPI into ``cache`` (once) and verify its sha256."""
    archive = cache / PYRADIOMICS_ARCHIVE
    if archive.is_file():
        return verify_pyradiomics(archive)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pip-") as tmp:
        try:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
                  "--disable-pip-version-check", f"pyradiomics=={PYRADIOMICS_VERSION}", "-d", tmp],
                 f"pyradiomics {PYRADIOMICS_VERSION} (source tarball)", "PyPI", cache)
        except SampleDataError as err:
            raise SampleDataError(f"{err} (pip runs the tarball's setup.py with the installed numpy and setuptools; "
                                  "`pip install -r requirements.txt` provides both)") from err.__cause__
        downloaded = Path(tmp) / PYRADIOMICS_ARCHIVE
        if not downloaded.is_file():
            raise SampleDataError(f"could not download pyradiomics {PYRADIOMICS_VERSION} from PyPI: pip wrote no {PYRADIOMICS_ARCHIVE}")
        verify_pyradiomics(downloaded)
        os.replace(downloaded, archive)
    return archive


def verify_pyradiomics(archive: Path) -> Path:
    """Raise ``SampleDataError`` unless ``archive`` has the published sha256 of the 3.0.1 source tarball."""
    digest = sha256_of(archive)
    if digest != PYRADIOMICS_SHA256:
        raise SampleDataError(f"{archive}: sha256 {digest} is not that of pyradiomics {PYRADIOMICS_VERSION} "
                              f"({PYRADIOMICS_SHA256}); delete the file to download it again")
    return archive


def download_mricron_data(cache: Path) -> Path:
    """Fetch the ``mricron-data`` .deb with ``apt-get download`` (apt checks it against the signed archive index)."""
    existing = sorted(cache.glob(f"{MRICRON_PACKAGE}_*.deb"))
    if existing:
        return existing[-1]
    cache.mkdir(parents=True, exist_ok=True)
    what = f"{MRICRON_PACKAGE} (Colin27 T1 + AAL atlas)"
    with tempfile.TemporaryDirectory(dir=cache, prefix=".apt-") as tmp:
        os.chmod(tmp, 0o755)
        try:
            _run(["apt-get", "download", MRICRON_PACKAGE], what, "the Debian archive", Path(tmp))
        except SampleDataError as err:
            if not re.search(r"Unable to locate|no candidate|Can't select", str(err)):
                raise
            _run(["apt-get", "update"], f"{what} (package lists; apt-get update needs root)", "the Debian archive", Path(tmp))
            _run(["apt-get", "download", MRICRON_PACKAGE], what, "the Debian archive", Path(tmp))
        debs = sorted(Path(tmp).glob(f"{MRICRON_PACKAGE}_*.deb"))
        if not debs:
            raise SampleDataError(f"could not download {what} from the Debian archive: apt-get wrote no .deb")
        target = cache / debs[-1].name
        os.replace(debs[-1], target)
    return target


def extract_pyradiomics_cases(archive: Path, dest: Path, cases: tuple[str, ...]) -> dict[str, Path]:
    """Copy ``data/<case>_{image,label}.nrrd`` (and the licence) out of the source tarball into ``dest``."""
    prefix = f"pyradiomics-{PYRADIOMICS_VERSION}/"
    wanted = {f"data/{case}_{kind}.nrrd" for case in cases for kind in ("image", "label")} | {"LICENSE.txt"}
    written: dict[str, Path] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = member.name[len(prefix):] if member.name.startswith(prefix) else None
                if name not in wanted or not member.isfile():
                    continue
                target = dest / Path(name).name
                source = tar.extractfile(member)
                with atomic_output(target) as tmp:
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(source, out)
                written[name] = target
    except (tarfile.TarError, OSError, EOFError) as err:
        raise SampleDataError(f"{archive}: cannot read the pyradiomics source tarball ({err})") from err
    missing = sorted(wanted - set(written))
    if missing:
        raise SampleDataError(f"{archive}: the tarball lacks {', '.join(missing)}")
    return written


def extract_mricron_templates(deb: Path, dest: Path) -> dict[str, Path]:
    """Unpack the .deb with ``dpkg -x`` (no root needed) and keep the Colin27 T1, the AAL atlas and the licence."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".deb-") as tmp:
        try:
            subprocess.run(["dpkg", "-x", str(deb), tmp], check=True, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as err:
            detail = getattr(err, "stderr", "") or err
            raise SampleDataError(f"{deb}: cannot unpack with dpkg -x ({str(detail).strip()})") from err
        sources = {name: Path(tmp) / MRICRON_TEMPLATES / name for name in MRICRON_FILES}
        sources["copyright"] = Path(tmp) / "usr/share/doc" / MRICRON_PACKAGE / "copyright"
        written = {}
        for name, source in sources.items():
            if not source.is_file():
                raise SampleDataError(f"{deb}: the package lacks {source.relative_to(tmp)}")
            with atomic_output(dest / name) as target_tmp:
                shutil.copyfile(source, target_tmp)
            written[name] = dest / name
    return written


# -------------------------------------------------------------------------------------------------- conversion
def nrrd_affine_ras(header: dict[str, Any], path: str | os.PathLike = "<nrrd>") -> np.ndarray:
    """4x4 RAS affine of a 3D NRRD: columns are the ``space directions`` vectors, translation the ``space origin``.

    NRRD world coordinates are usually LPS (DICOM convention); NIfTI is RAS, so x and y change sign.
    """
    space = str(header.get("space", "")).lower()
    directions = header.get("space directions")
    origin = header.get("space origin")
    if header.get("dimension") != 3 or directions is None or origin is None:
        raise SampleDataError(f"{path}: not a 3D NRRD with 'space directions' and 'space origin'")
    directions = np.asarray(directions, dtype=np.float64)
    if directions.shape != (3, 3) or not np.all(np.isfinite(directions)) or abs(np.linalg.det(directions)) < 1e-12:
        raise SampleDataError(f"{path}: 'space directions' must be three finite, independent 3-vectors")
    flip = {"left-posterior-superior": [-1, -1, 1], "lps": [-1, -1, 1],
            "right-anterior-superior": [1, 1, 1], "ras": [1, 1, 1]}.get(space)
    if flip is None:
        raise SampleDataError(f"{path}: unsupported NRRD space {space!r} (expected LPS or RAS)")
    affine = np.eye(4)
    affine[:3, :3] = np.diag(flip) @ directions.T
    affine[:3, 3] = np.diag(flip) @ np.asarray(origin, dtype=np.float64)
    return affine


def convert_nrrd_pair(image_path: Path, label_path: Path, image_out: Path, label_out: Path,
                      label_values: dict[int, int]) -> None:
    """Write a NRRD image/label pair as NIfTI (image keeps its type, label uint8 remapped by ``label_values``)."""
    image, image_header = nrrd.read(str(image_path))
    label, label_header = nrrd.read(str(label_path))
    affine = nrrd_affine_ras(image_header, image_path)
    if label.shape != image.shape or not np.allclose(nrrd_affine_ras(label_header, label_path), affine, atol=1e-4):
        raise SampleDataError(f"{label_path}: label grid {label.shape} does not match image {image_path} {image.shape}")
    unexpected = sorted(set(np.unique(label).tolist()) - set(label_values) - {0})
    if unexpected:
        raise SampleDataError(f"{label_path}: unexpected label values {unexpected} (expected {sorted(label_values)})")
    remapped = np.zeros(label.shape, dtype=np.uint8)
    for source_value, target_value in label_values.items():
        remapped[label == source_value] = target_value
    write_nifti(image, affine, image_out, image.dtype)
    write_nifti(remapped, affine, label_out, np.uint8)


def read_aal_names(path: Path) -> dict[int, str]:
    """Parse ``aal.nii.txt`` lines ``<value> <name> <code>`` into {value: name}."""
    names: dict[int, str] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            names[int(fields[0])] = fields[1]
    if not names:
        raise SampleDataError(f"{path}: no '<value> <name>' lines found")
    return names


def aal_group_of(region: str) -> int:
    """Group value (1-based index into ``AAL_GROUPS``) of an AAL region name; ``SampleDataError`` if none fits."""
    base = re.sub(r"_[LR]$", "", region)
    matches = [index for index, (_, pattern) in enumerate(AAL_GROUPS, start=1) if re.fullmatch(pattern, base)]
    if len(matches) != 1:
        raise SampleDataError(f"AAL region {region!r} matches {len(matches)} structure groups; fix AAL_GROUPS")
    return matches[0]


def convert_colin27(templates: Path, image_out: Path, label_out: Path) -> dict[str, list[str]]:
    """Write Colin27 T1 and its AAL regions grouped by ``AAL_GROUPS``; return {group: [AAL regions]}."""
    image = nib.load(str(templates / "ch2.nii.gz"))
    atlas = nib.load(str(templates / "aal.nii.gz"))
    if image.shape != atlas.shape or not np.allclose(image.affine, atlas.affine, atol=1e-4):
        raise SampleDataError(f"{templates}: aal.nii.gz is not on the grid of ch2.nii.gz")
    names = read_aal_names(templates / "aal.nii.txt")
    regions = np.asarray(atlas.dataobj)
    lookup = np.zeros(max(max(names), int(regions.max())) + 1, dtype=np.uint8)
    for value, region in names.items():
        lookup[value] = aal_group_of(region)
    unnamed = sorted(set(np.unique(regions).tolist()) - set(names) - {0})
    if unnamed:
        raise SampleDataError(f"{templates / 'aal.nii.gz'}: values {unnamed} have no name in aal.nii.txt")
    write_nifti(np.asarray(image.dataobj), image.affine, image_out, image.get_data_dtype())
    write_nifti(lookup[regions], atlas.affine, label_out, np.uint8)
    groups: dict[str, list[str]] = {name: [] for name, _ in AAL_GROUPS}
    for value, region in sorted(names.items()):
        groups[AAL_GROUPS[lookup[value] - 1][0]].append(region)
    return groups


# ------------------------------------------------------------------------------------------- registry/datalist
def task_entries(datasets: tuple[SampleDataset, ...] = DATASETS, first_id: int = FIRST_TASK_ID) -> list[dict[str, Any]]:
    """Task list in the fixed dataset order, ids counting up from ``first_id`` (same ids on every run)."""
    tasks, next_id = [], first_id
    for dataset in datasets:
        for label, name in enumerate(dataset.tasks, start=1):
            tasks.append({"id": next_id, "dataset": dataset.name, "name": name, "label": label})
            next_id += 1
    return tasks


def sample_registry() -> dict[str, Any]:
    """Extra registry in the schema of ``configs/task_registry.json``, merged on top of the base one."""
    datasets = {
        dataset.name: {"modality": dataset.modality, "sample_weight": 1.0,
                       "intensity_aug_prob": 0.1 if dataset.modality in ("ct", "pet") else 0.2, "source": dataset.source}
        for dataset in DATASETS
    }
    return {
        "description": "Built-in sample suite (scripts.sample_data): real pyradiomics and mricron-data cases plus the "
                       "synthetic PET phantom. Task ids from 72 upwards in a fixed order.",
        "modalities": dict(MODALITIES), "reserved_ids": [], "datasets": datasets, "tasks": task_entries(),
    }


def _case_files(dataset: SampleDataset, case: str) -> dict[str, str]:
    return {"image": f"{dataset.name}/{case}_image.nii.gz", "label": f"{dataset.name}/{case}_label.nii.gz",
            "dataset": dataset.name}


def sample_datalist() -> dict[str, list[dict[str, str]]]:
    """Datalist: each dataset's validation case held out when it has 2+ cases, else reused for validation."""
    datalist: dict[str, list[dict[str, str]]] = {"training": [], "validation": []}
    for dataset in DATASETS:
        for case in dataset.cases:
            if case != dataset.validation_case or len(dataset.cases) == 1:
                datalist["training"].append(_case_files(dataset, case))
        datalist["validation"].append(_case_files(dataset, dataset.validation_case))
    return datalist


# ------------------------------------------------------------------------------------------------- the suite
def recipe_digest() -> str:
    """Fingerprint of what the code would write (registry, datalist, AAL grouping), so an edit rebuilds the cache."""
    recipe = {"version": SUITE_VERSION, "registry": sample_registry(), "datalist": sample_datalist(),
              "aal_groups": AAL_GROUPS, "pet_cases": SYNTHETIC_PET_CASES}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _paths(root: Path) -> dict[str, str]:
    return {"root": str(root), "datalist": str(root / "datalist.json"),
            "task_registry": str(root / "task_registry.json"), "manifest": str(root / MANIFEST)}


def _cached(root: Path) -> dict[str, Any] | None:
    """The manifest if every output it lists is present with its recorded size, else None."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("suite_version") != SUITE_VERSION or manifest.get("recipe") != recipe_digest():
        return None
    for relative, size in manifest.get("outputs", {}).items():
        path = root / relative
        if not path.is_file() or path.stat().st_size != size:
            return None
    return manifest


def _claim_root(root: Path) -> None:
    """Create ``root`` or accept it if it is ours; never write into a user's non-empty folder."""
    if (root / ROOT_MARKER).is_file():
        return
    if root.exists() and any(root.iterdir()):
        raise SampleDataError(f"{root} is not empty and is not a sample-suite folder; choose another --root")
    root.mkdir(parents=True, exist_ok=True)
    (root / ROOT_MARKER).write_text("hermes_universal_segmentation sample suite\n")


def _build(root: Path, log: list[str]) -> dict[str, Any]:
    """Fetch what is missing, convert everything, write datalist/registry and finally the manifest."""
    started = time.perf_counter()
    downloads, raw = root / "downloads", root / "raw"
    pyradiomics_cases = tuple(case for d in DATASETS if d.source == PYRADIOMICS_SOURCE for case in d.cases)
    raw_pyradiomics, raw_mricron = raw / "pyradiomics", raw / "mricron"
    manifest: dict[str, Any] = {"suite_version": SUITE_VERSION, "recipe": recipe_digest(), "sources": {}, "outputs": {}}
    (root / MANIFEST).unlink(missing_ok=True)  # until the new one is written, the folder counts as incomplete

    had = (downloads / PYRADIOMICS_ARCHIVE).is_file()
    archive = download_pyradiomics(downloads)
    log.append(("reused " if had else "downloaded ") + f"{archive} from PyPI")
    extract_pyradiomics_cases(archive, raw_pyradiomics, pyradiomics_cases)
    manifest["sources"]["pyradiomics"] = {"file": archive.name, "sha256": sha256_of(archive),
                                          "registry": "PyPI", "licence": "BSD-3 (raw/pyradiomics/LICENSE.txt)"}
    had = bool(list(downloads.glob(f"{MRICRON_PACKAGE}_*.deb")))
    deb = download_mricron_data(downloads)
    log.append(("reused " if had else "downloaded ") + f"{deb} from the Debian archive")
    extract_mricron_templates(deb, raw_mricron)
    manifest["sources"]["mricron-data"] = {"file": deb.name, "sha256": sha256_of(deb), "registry": "Debian",
                                           "licence": "BSD-3 (raw/mricron/copyright)"}

    for dataset in DATASETS:
        for case in dataset.cases:
            files = _case_files(dataset, case)
            image_out, label_out = root / files["image"], root / files["label"]
            if dataset.source == PYRADIOMICS_SOURCE:
                convert_nrrd_pair(raw_pyradiomics / f"{case}_image.nrrd", raw_pyradiomics / f"{case}_label.nrrd",
                                  image_out, label_out, {1: 1})
            elif dataset.name == "sample_colin27_t1":
                groups = convert_colin27(raw_mricron, image_out, label_out)
                write_json(groups, root / dataset.name / "aal_groups.json")
            else:
                rng = np.random.default_rng([SUITE_VERSION, dataset.cases.index(case)])
                suv, lesions, affine = make_pet_phantom(rng)
                write_nifti(suv, affine, image_out, np.float32)
                write_nifti(lesions, affine, label_out, np.uint8)
            log.append(f"wrote {image_out} and {label_out.name}")
    paths = _paths(root)
    write_json(sample_registry(), paths["task_registry"])
    write_json(sample_datalist(), paths["datalist"])

    outputs = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
               and p.name != MANIFEST and downloads not in p.parents]
    manifest["outputs"] = {str(p.relative_to(root)): p.stat().st_size for p in sorted(outputs)}
    manifest["build_seconds"] = round(time.perf_counter() - started, 1)
    write_json(manifest, paths["manifest"])
    # The converted cases and raw files are kept; the archives are only needed to rebuild, and pip keeps its own cache.
    shutil.rmtree(downloads, ignore_errors=True)
    log.append(f"wrote {paths['datalist']} and {paths['task_registry']} in {manifest['build_seconds']} s")
    return manifest


def ensure_sample_suite(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Return {"root", "datalist", "task_registry", "manifest", "log"} of the sample suite, fetching it if needed.

    Idempotent: once ``manifest.json`` lists complete outputs, a call touches no network and writes nothing.
    Raises ``SampleDataError`` with the package and registry named when a download fails.
    """
    root = Path(root).expanduser() if root is not None else default_root()
    log: list[str] = []
    if _cached(root) is None:
        _claim_root(root)
        with _locked(root):
            if _cached(root) is None:  # another process may have finished while we waited for the lock
                _build(root, log)
    if not log:
        log.append(f"reused the cached sample suite in {root}")
    return {**_paths(root), "log": log}


def disk_usage(root: str | os.PathLike) -> int:
    """Bytes used by the files under ``root``."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.sample_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None, help="cache folder (default: $HERMES_SAMPLE_DIR or ~/.cache/...)")
    parser.add_argument("--phantoms", default=None, metavar="DIR",
                        help="also write the two synthetic CT phantom datasets for learning checks into DIR")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        suite = ensure_sample_suite(args.root)
    except SampleDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for line in suite["log"]:
        print(line)
    print(f"sample suite: {suite['root']} ({disk_usage(suite['root']) / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s)")
    print(f"datalist: {suite['datalist']}")
    print(f"task registry: {suite['task_registry']}")
    if args.phantoms:
        phantoms = make_phantom_datasets(args.phantoms)
        print(f"phantom datalist: {phantoms['datalist']}\nphantom task registry: {phantoms['task_registry']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
