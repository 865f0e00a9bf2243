"""The suite's cache folder: claimed before anything is written, locked while building, trusted only when complete.

A folder is ours when it holds our marker file; a user's non-empty folder is never written into. The manifest is
written last and lists every output with its size, so a folder whose build was interrupted, whose files went
missing or that was written by other code (another recipe digest) is rebuilt; a complete one is reused without any
download.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .catalogue import MANIFEST_FILE, SUITE_VERSION, recipe_digest, suite_paths
from .errors import SampleDataError

#: Marker file of a folder the suite created; its presence lets later runs write there.
ROOT_MARKER = ".hermes_sample_suite"


def default_root() -> Path:
    """Cache folder: ``$HERMES_SAMPLE_DIR`` if set, else ``~/.cache/hermes_universal_segmentation/sample_suite``."""
    env = os.environ.get("HERMES_SAMPLE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hermes_universal_segmentation" / "sample_suite"


def claim_folder(root: Path, marker: str, what: str) -> None:
    """Create ``root`` and its ``marker``, or accept it if the marker is there; never take a user's non-empty folder.

    Safe when several processes claim one new folder at once (torchrun ranks, parallel test workers): the marker is
    the first name anyone creates in the folder, created exclusively, so a folder seen non-empty without it is not ours.
    """
    if root.exists() and not root.is_dir():
        raise SampleDataError(
            f"{root} is a file, not a {what} folder; nothing was written: choose a new or empty folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    names = {entry.name for entry in root.iterdir()}
    if names and marker not in names:
        raise SampleDataError(
            f"{root} is not empty and is not a {what} folder (it has no {marker}); nothing was "
            "written: choose a new or empty folder"
        )
    with contextlib.suppress(FileExistsError):  # claimed by us earlier or by a parallel run a moment ago
        with open(root / marker, "x", encoding="utf-8") as handle:
            handle.write(f"{what} folder written by hermes_universal_segmentation\n")


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root`` so parallel runs build once and the others reuse the result."""
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


def cached_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest if it is of this suite version and recipe and every output it lists has its size, else None."""
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (
        not isinstance(manifest, dict)
        or manifest.get("suite_version") != SUITE_VERSION
        or manifest.get("recipe") != recipe_digest()
        or not isinstance(manifest.get("outputs"), dict)
    ):
        return None
    for relative, size in manifest["outputs"].items():
        path = root / relative
        if not path.is_file() or path.stat().st_size != size:
            return None
    return manifest


def ensure_sample_suite(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Return {"root", "datalist", "task_registry", "manifest", "log"} of the sample suite, building it if needed.

    Idempotent: once ``manifest.json`` lists complete outputs, a call touches no network and writes nothing. Paths
    are absolute and resolved, the form ``own_registries`` gives for the datalist's registry.
    Raises ``SampleDataError`` naming the package and registry when a download fails, or the folder when it is a
    user's.
    """
    root = (Path(root).expanduser() if root is not None else default_root()).resolve()
    log: list[str] = []
    if cached_manifest(root) is None:
        try:
            claim_folder(root, ROOT_MARKER, "sample-suite")
        except OSError as err:  # an unwritable or missing HOME, a read-only HERMES_SAMPLE_DIR
            raise SampleDataError(
                f"the sample suite's folder {root} cannot be created ({err.strerror or err}): set "
                "HERMES_SAMPLE_DIR to a folder you can write to, or train on your own data with --datalist DATALIST"
            ) from None
        with locked(root):
            if cached_manifest(root) is None:  # another process may have finished while we waited for the lock
                from .build import build_suite  # only here: reusing the cache needs no MONAI import (5 s)

                build_suite(root, log)
    if not log:
        log.append(f"reused the cached sample suite in {root}")
    return {**suite_paths(root), "log": log}


def default_datalist() -> str:
    """The sample suite's datalist (built on first use): what training reads without ``--datalist``."""
    return str(ensure_sample_suite()["datalist"])
