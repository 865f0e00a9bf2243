"""JSON files and file digests."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import HermesError
from .atomic import atomic_text


def read_json_object(path: str | os.PathLike, what: str, error: type[Exception] = HermesError) -> dict[str, Any]:
    """A JSON file whose top level is an object; every problem is one ``error`` naming ``what`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path}: no such file")
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{what} {path}: not valid JSON ({err})") from err
    if not isinstance(content, dict):
        raise error(f"{what} {path}: the top level must be a JSON object")
    return content


def write_json(obj: Any, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_text(path, json.dumps(obj, indent=1) + "\n", overwrite=overwrite)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (archives and weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
