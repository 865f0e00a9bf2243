"""An output folder a run can rely on: checked before the first case, held by one run at a time.

``claim()`` creates the folder, proves it writable, and takes an exclusive lock (``.hermes.lock``, released when the
process ends, even if it is killed), so a second run into the same folder stops at once with one line instead of
mixing its outputs with the first run's. Staging folders left by a killed run are removed: under the lock nobody
else can be writing them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import SetupError

LOCK_NAME = ".hermes.lock"
STAGING_PREFIX = ".staging."


class OutputFolder:
    """The folder ``path`` with its lock; ``option`` names the setting in messages (``--output_dir``)."""

    def __init__(self, path: str | os.PathLike, option: str = "--output_dir") -> None:
        self.path = Path(str(path)).expanduser()
        self.option = option
        self._lock_handle = None

    def claim(self, lock: bool = True) -> Path:
        """Create, check and lock the folder; raises ``SetupError`` naming the folder and the problem. ``lock``
        False: another process of the same run holds the lock (a ``torchrun`` rank other than 0)."""
        if self.path.exists() and not self.path.is_dir():
            raise SetupError(f"{self.option} {self.path} is a file, not a folder; choose another {self.option}")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".hermes-write-test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise SetupError(
                f"{self.option} {self.path} cannot be written ({err.strerror or err}); choose a folder "
                "you can write to"
            ) from None
        if not lock:
            return self.path
        self._lock()
        for stale in self.path.iterdir():
            if stale.name.startswith(STAGING_PREFIX):
                shutil.rmtree(stale, ignore_errors=True)
        return self.path

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform
            return
        handle = open(self.path / LOCK_NAME, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SetupError(
                f"{self.option} {self.path} is in use by another run ({holder}); wait for it to finish "
                f"or choose another {self.option}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock_handle = handle

    def release(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def staging(self, name: str) -> Path:
        """A fresh private folder inside the output folder for one case's files (same file system: moves are atomic)."""
        folder = self.path / f"{STAGING_PREFIX}{name}.{os.getpid()}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder
