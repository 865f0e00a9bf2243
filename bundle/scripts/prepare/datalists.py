"""Datalists of prepared cases: one per dataset, and one over every dataset prepared into the same folder.

Items are ``{"image", "label", "dataset"[, "modality"]}`` with paths relative to the datalist, in the official
sections ``training``, ``validation`` and ``testing``, sorted by case id; ``scripts.data.datalist.read_datalist``
reads them with the bundle's task registry as they are, and ``train_published.json`` takes the combined one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..io.files import write_json
from .cases import SourceCase
from .staging import case_files, is_prepared

SECTIONS = ("training", "validation", "testing")
#: The datalist of one dataset (in its folder) and the combined one (in the output folder).
DATASET_DATALIST = "datalist.json"
COMBINED_DATALIST = "datalist.json"


def dataset_items(dataset_dir: Path, cases: Iterable[tuple[SourceCase, str]]) -> dict[str, list[dict]]:
    """The sections of one dataset: each (case, section) whose case folder is complete."""
    sections: dict[str, list[dict]] = {name: [] for name in SECTIONS}
    for case, section in sorted(cases, key=lambda pair: pair[0].case_id):
        folder = dataset_dir / case.case_id
        if not is_prepared(folder):
            continue
        image, label = case_files(folder)
        item = {"image": f"{case.case_id}/{image.name}", "label": f"{case.case_id}/{label.name}"}
        item["dataset"] = case.dataset
        if case.sequence is not None:
            item["modality"] = case.sequence
        sections[section].append(item)
    return sections


def write_dataset_datalist(dataset_dir: Path, sections: dict[str, list[dict]]) -> Path:
    return write_json(sections, dataset_dir / DATASET_DATALIST)


def write_combined_datalist(out_dir: Path, datasets: Iterable[str]) -> tuple[Path, dict[str, int]]:
    """Merge the datalists of every dataset folder of ``out_dir`` (registry names only) into one."""
    combined: dict[str, list[dict]] = {name: [] for name in SECTIONS}
    for dataset in sorted(datasets):
        path = out_dir / dataset / DATASET_DATALIST
        if not path.is_file():
            continue
        content = json.loads(path.read_text(encoding="utf-8"))
        for section in SECTIONS:
            for item in content.get(section, []):
                moved = dict(item, image=f"{dataset}/{item['image']}", label=f"{dataset}/{item['label']}")
                combined[section].append(moved)
    target = write_json(combined, out_dir / COMBINED_DATALIST)
    return target, {section: len(items) for section, items in combined.items()}
