"""Small file helpers shared by the bundle's commands: atomic writes and safe checkpoint loading."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch


def atomic_torch_save(obj: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save ``obj`` with ``torch.save`` so that ``path`` is either the old file or the complete new one, never half.

    Raises ``FileExistsError`` when ``path`` exists and ``overwrite`` is False, so nothing a user had is lost.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights are shared like any other output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights_only(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``; a clear ``ValueError`` names the file when that is impossible."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path}: not a PyTorch checkpoint that loads with weights_only=True ({_why(path, err)})") from err


def _why(path: Path, err: Exception) -> str:
    """A short reason for a failed weights-only load; torch's own text suggests unsafe loading, which we never do."""
    if not zipfile.is_zipfile(path):
        return "the file is not a torch.save archive: wrong file, or truncated"
    if "Weights only load failed" in str(err):
        return "it holds Python objects other than tensors and plain containers, which are refused for safety"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (archives and weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_object(path: str | os.PathLike, what: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """Read a JSON file whose top level must be an object; every problem is one ``error`` naming ``what`` and the file."""
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
