"""One atomic writer for every file the bundle produces.

A file appears complete or not at all: it is written under a temporary name beside its target and moved into place
in one step. Temporary names carry the writing process's id, so the temporaries of a save that was killed are
recognised and removed by the next save of the same file. Outputs get the permissions of any file the user creates
(``0o666`` minus the umask), never ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import HermesError


class OutputExistsError(HermesError, FileExistsError):
    """The target exists and the caller did not allow replacing it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _suffix(path: Path) -> str:
    """The extension writers infer the format from (``.nii.gz`` counts as one)."""
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporaries of ``path`` left by a writer that no longer runs (a save killed half way)."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = _temporary_prefix(path)
    for candidate in path.parent.iterdir():  # compared literally: a user's file name is never a pattern
        if not candidate.name.startswith(prefix) or ".tmp" not in candidate.name[len(prefix) :]:
            continue
        pid_text = candidate.name[len(prefix) :].split(".", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], Any], overwrite: bool = True, durable: bool = False
) -> Path:
    """Call ``write(temporary_path)``, then move the result onto ``path`` in one step; returns ``path``.

    Args:
        path: the target file.
        write: writes the content to the path it is given (same folder and extension as the target).
        overwrite: replace an existing target; when False an existing target raises ``OutputExistsError`` and is
            never touched, even if another process creates it meanwhile.
        durable: flush the file to disk before it is moved into place (checkpoints).
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path} already exists; pass --overwrite true to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, name = tempfile.mkstemp(
        prefix=f"{_temporary_prefix(path)}{os.getpid()}.", suffix=f".tmp{_suffix(path)}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            _move_without_replacing(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _move_without_replacing(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)  # fails if the target appeared meanwhile: nothing is replaced
    except FileExistsError:
        raise OutputExistsError(f"{path} already exists; pass --overwrite true to replace it") from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise OutputExistsError(f"{path} already exists; pass --overwrite true to replace it") from None
        os.replace(tmp, path)


def atomic_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)


def atomic_torch_save(obj: Any, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """``torch.save`` atomically and durably: ``path`` is the old file or the complete new one, never half."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp), overwrite=overwrite, durable=True)


def unused_path(path: str | os.PathLike) -> Path:
    """``path`` if free, else ``stem_1.ext``, ``stem_2.ext``...: earlier results are never overwritten."""
    path = Path(path)
    suffix = _suffix(path)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{stem}_{n}{suffix}")
    return candidate
