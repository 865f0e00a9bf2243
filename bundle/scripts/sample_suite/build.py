"""Writing the whole suite into a claimed folder: fetch, convert, registry and datalist, and the manifest last."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..io.files import sha256_of, write_json
from ..io.nifti import write_nifti
from ..phantoms import make_pet_phantom
from .catalogue import (
    AAL_GROUPS_FILE,
    DATASETS,
    DOWNLOADS,
    MANIFEST_FILE,
    MRICRON_PACKAGE,
    PET_SEED,
    PYRADIOMICS_ARCHIVE,
    RAW_MRICRON,
    RAW_PYRADIOMICS,
    SUITE_VERSION,
    SampleDataset,
    case_files,
    datasets_from,
    recipe_digest,
    sample_datalist,
    sample_registry,
    suite_paths,
)
from .conversion import convert_colin27, convert_nrrd_pair
from .sources import download_mricron_data, download_pyradiomics, extract_mricron_templates, extract_pyradiomics_cases


def fetch_sources(root: Path, log: list[str]) -> dict[str, Any]:
    """Download (or reuse) both archives, take out the files the datasets need; return the manifest's sources."""
    downloads = root / DOWNLOADS
    had = (downloads / PYRADIOMICS_ARCHIVE).is_file()
    archive = download_pyradiomics(downloads)
    log.append(("reused " if had else "downloaded ") + f"{archive} from PyPI")
    cases = tuple(case for dataset in datasets_from("pyradiomics") for case in dataset.cases)
    extract_pyradiomics_cases(archive, root / RAW_PYRADIOMICS, cases)
    had = any(downloads.glob(f"{MRICRON_PACKAGE}_*.deb"))
    deb = download_mricron_data(downloads)
    log.append(("reused " if had else "downloaded ") + f"{deb} from the Debian archive")
    extract_mricron_templates(deb, root / RAW_MRICRON)
    return {
        "pyradiomics": {
            "file": archive.name,
            "sha256": sha256_of(archive),
            "registry": "PyPI",
            "licence": f"BSD-3 ({RAW_PYRADIOMICS}/LICENSE.txt)",
        },
        "mricron-data": {
            "file": deb.name,
            "sha256": sha256_of(deb),
            "registry": "Debian",
            "licence": f"BSD-3 ({RAW_MRICRON}/copyright)",
        },
    }


def write_case(root: Path, dataset: SampleDataset, case: str) -> tuple[Path, Path]:
    """Write one case's image and label (and, for Colin27, the list of AAL regions in each group); return both."""
    files = case_files(dataset, case)
    image_out, label_out = root / files["image"], root / files["label"]
    if dataset.origin == "pyradiomics":
        raw = root / RAW_PYRADIOMICS
        convert_nrrd_pair(raw / f"{case}_image.nrrd", raw / f"{case}_label.nrrd", image_out, label_out, {1: 1})
    elif dataset.origin == "mricron":
        groups = convert_colin27(root / RAW_MRICRON, image_out, label_out)
        write_json(groups, root / dataset.name / AAL_GROUPS_FILE)
    else:
        suv, lesions, affine = make_pet_phantom(np.random.default_rng([PET_SEED, dataset.cases.index(case)]))
        write_nifti(image_out, suv, affine, np.float32)
        write_nifti(label_out, lesions, affine, np.uint8)
    return image_out, label_out


def build_suite(root: Path, log: list[str]) -> dict[str, Any]:
    """Fetch what is missing, write every case, the registry, the datalist and finally the manifest."""
    started = time.perf_counter()
    paths = suite_paths(root)
    (root / MANIFEST_FILE).unlink(missing_ok=True)  # until the new one is written, the folder counts as incomplete
    sources = fetch_sources(root, log)
    for dataset in DATASETS:
        for case in dataset.cases:
            image_out, label_out = write_case(root, dataset, case)
            log.append(f"wrote {image_out} and {label_out.name}")
    write_json(sample_registry(), paths["task_registry"])
    write_json(sample_datalist(), paths["datalist"])

    downloads = root / DOWNLOADS
    outputs = [
        p
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST_FILE and downloads not in p.parents
    ]
    manifest = {
        "suite_version": SUITE_VERSION,
        "recipe": recipe_digest(),
        "sources": sources,
        "outputs": {str(p.relative_to(root)): p.stat().st_size for p in sorted(outputs)},
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(manifest, paths["manifest"])
    # The converted cases and raw files are kept; the archives are only needed to rebuild, and pip keeps its own cache.
    shutil.rmtree(downloads, ignore_errors=True)
    log.append(f"wrote {paths['datalist']} and {paths['task_registry']} in {manifest['build_seconds']} s")
    return manifest
