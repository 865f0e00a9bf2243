"""The official training/validation/test case ids of the published datasets (``official_splits.json``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..io.files import read_json_object

#: The published split ids, a copy of the published ``dataset_config.py`` lists.
SPLITS_FILE = Path(__file__).with_name("official_splits.json")
#: Published split name -> datalist section.
SECTIONS = {"train": "training", "val": "validation", "test": "testing"}


@lru_cache(maxsize=None)
def _content() -> dict:
    return read_json_object(SPLITS_FILE, "official splits")["datasets"]


def split_datasets() -> list[str]:
    """Datasets that have official splits (the eleven published ones)."""
    return list(_content())


def official_sections(dataset: str) -> dict[str, str]:
    """Official case id (as a string) -> datalist section; an id listed twice is used once (head-and-neck val 25)."""
    sections: dict[str, str] = {}
    for split, ids in _content()[dataset].items():
        for case in ids:
            sections.setdefault(str(case), SECTIONS[split])
    return sections
