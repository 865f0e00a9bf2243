"""One reader per official download layout; ``READERS`` maps each registry dataset to the module that reads it.

A reader module has ``DATASETS`` (the registry datasets it serves), ``RELEASE`` (which release and folder layout it
expects, shown when a folder does not look like it), ``find(src, dataset) -> Found`` (the cases under ``src``, at
any depth) and ``load(case, registry) -> (image, label)`` (volumes in world coordinates, label values of the
registry or the download's own values that the registry maps).
"""

from __future__ import annotations

from types import ModuleType

from . import amos, autopet, bcv, brain_structure, chaos, kits, lits, mnm, structseg

MODULES: tuple[ModuleType, ...] = (lits, kits, amos, bcv, structseg, chaos, mnm, brain_structure, autopet)
READERS: dict[str, ModuleType] = {dataset: module for module in MODULES for dataset in module.DATASETS}
