"""Loading checkpoints safely: ``weights_only=True`` always, and a clear reason when a file cannot be used."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from ..errors import HermesError


class CheckpointError(HermesError, ValueError):
    """A checkpoint file is missing, unreadable, unsafe, or not what the caller needs."""


def load_weights_only(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``; every failure is a ``CheckpointError`` naming the file and why.

    ``mmap``: map the tensors instead of reading them (checks the archive and its structure at almost no cost).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint that loads with weights_only=True " f"({_why(path, err)})"
        ) from err


def _why(path: Path, err: Exception) -> str:
    """A short reason; torch's own text suggests loading unsafely, which the bundle never does."""
    if not zipfile.is_zipfile(path):
        if _looks_like_web_page(path):
            return (
                "the file is not a torch.save archive but a web page (a download that saved the server's page, "
                "e.g. a quota or sign-in notice, instead of the file)"
            )
        return "the file is not a torch.save archive: wrong file, or truncated"
    if "Weights only load failed" in str(err):
        return "it holds Python objects other than tensors and plain containers, which are refused for safety"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _looks_like_web_page(path: Path) -> bool:
    with open(path, "rb") as handle:
        start = handle.read(512).lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html")) or b"<html" in start
