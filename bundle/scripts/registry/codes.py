"""How each task name is coded in a DICOM SEG: the table ``configs/segment_codes.json`` beside the task registry.

A code is written ``SCHEME:VALUE:MEANING`` (``SCT:10200004:Liver``). An entry names a category (one of the table's
``categories``), a type, and optionally a laterality (``left``/``right``, a type modifier) and an anatomic region; the
word ``generic`` stands for the table's generic code (names without one reliable SNOMED CT concept).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pydicom.sr.coding import Code

from ..errors import SetupError
from ..io.files import read_json_object
from .registry import normalize_task_name


def parse_code(text: str, where: str) -> Code:
    """``SCHEME:VALUE:MEANING`` -> a pydicom ``Code``."""
    parts = str(text).split(":", 2)
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise SetupError(f"{where}: expected a code written SCHEME:VALUE:MEANING, got {text!r}")
    scheme, value, meaning = (p.strip() for p in parts)
    return Code(value=value, scheme_designator=scheme, meaning=meaning)


@dataclass(frozen=True)
class SegmentCode:
    """The coded meaning of one segment."""

    category: Code
    type: Code
    laterality: Code | None = None
    region: Code | None = None
    generic: bool = False

    def as_json(self) -> dict[str, Any]:
        def text(code: Code | None) -> str | None:
            return None if code is None else f"{code.scheme_designator}:{code.value}:{code.meaning}"

        return {
            "category": text(self.category),
            "type": text(self.type),
            "laterality": text(self.laterality),
            "region": text(self.region),
            "generic": self.generic,
        }


class SegmentCodes:
    """Task name -> ``SegmentCode`` (names compared as the registry compares them)."""

    def __init__(self, codes: dict[str, SegmentCode], source: str = "segment codes") -> None:
        self.codes = codes
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike) -> SegmentCodes:
        content = read_json_object(path, "segment code table", SetupError)
        where = str(path)
        try:
            categories = {k: parse_code(v, f"{where} categories.{k}") for k, v in content["categories"].items()}
            sides = {k: parse_code(v, f"{where} laterality.{k}") for k, v in content["laterality"].items()}

            def entry(name: str, value: Any, generic: bool = False) -> SegmentCode:
                if value == "generic":
                    return entry(name, content["generic"], generic=True)
                at = f"{where} tasks.{name}"
                if value.get("category") not in categories:
                    raise SetupError(f"{at}: category must be one of {', '.join(categories)}")
                if value.get("laterality") not in (None, *sides):
                    raise SetupError(f"{at}: laterality must be one of {', '.join(sides)}")
                return SegmentCode(
                    category=categories[value["category"]],
                    type=parse_code(value["type"], f"{at}.type"),
                    laterality=sides.get(value.get("laterality")),
                    region=parse_code(value["region"], f"{at}.region") if value.get("region") else None,
                    generic=generic,
                )

            codes = {normalize_task_name(name): entry(name, value) for name, value in content["tasks"].items()}
        except (KeyError, AttributeError, TypeError) as err:
            raise SetupError(f"{where}: malformed segment code table ({err})") from err
        return cls(codes, where)

    def get(self, task_name: str) -> SegmentCode | None:
        return self.codes.get(normalize_task_name(task_name))
