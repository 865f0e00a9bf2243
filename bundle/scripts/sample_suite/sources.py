"""Fetching the two packages that carry the suite's real images, checking them, and taking out the files needed.

* the pyradiomics source tarball from PyPI (``pip download``), checked against its published sha256;
* Debian ``mricron-data`` (``apt-get download``, which checks the .deb against the signed archive index).

Every failure is one :class:`SampleDataError` naming the package and the registry (or the archive) and why. Files
land through the atomic writer, so an interrupted fetch leaves no half file that looks complete.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from ..io.atomic import atomic_write
from ..io.files import sha256_of
from .catalogue import (
    MRICRON_FILES,
    MRICRON_PACKAGE,
    MRICRON_TEMPLATES,
    PYRADIOMICS_ARCHIVE,
    PYRADIOMICS_SHA256,
    PYRADIOMICS_VERSION,
)
from .errors import SampleDataError

PYPI = "PyPI"
DEBIAN = "the Debian archive"
PYRADIOMICS_WHAT = f"pyradiomics {PYRADIOMICS_VERSION} (source tarball)"
MRICRON_WHAT = f"{MRICRON_PACKAGE} (Colin27 T1 + AAL atlas)"


def run_download(command: list[str], what: str, registry: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a download command; any failure is one ``SampleDataError`` naming the package and registry."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SampleDataError(f"could not download {what} from {registry}: {err}") from err
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        message = " | ".join(detail[-3:]) if detail else f"exit status {done.returncode}"
        raise SampleDataError(f"could not download {what} from {registry}: {message}")
    return done


def verify_pyradiomics(archive: Path) -> Path:
    """Raise ``SampleDataError`` unless ``archive`` has the published sha256 of the pinned source tarball."""
    digest = sha256_of(archive)
    if digest != PYRADIOMICS_SHA256:
        raise SampleDataError(
            f"{archive}: sha256 {digest} is not that of pyradiomics {PYRADIOMICS_VERSION} "
            f"({PYRADIOMICS_SHA256}); delete the file to download it again"
        )
    return archive


def download_pyradiomics(cache: Path) -> Path:
    """The verified source tarball in ``cache``, fetched from PyPI unless it is there already."""
    archive = cache / PYRADIOMICS_ARCHIVE
    if archive.is_file():
        return verify_pyradiomics(archive)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".pip-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            "--disable-pip-version-check",
            f"pyradiomics=={PYRADIOMICS_VERSION}",
            "-d",
            tmp,
        ]
        try:
            run_download(command, PYRADIOMICS_WHAT, PYPI, cache)
        except SampleDataError as err:
            raise SampleDataError(
                f"{err} (pip runs the tarball's setup.py with the installed numpy and setuptools; "
                "`pip install numpy setuptools`, or the repository's requirements.txt, provides "
                "both)"
            ) from err.__cause__
        downloaded = Path(tmp) / PYRADIOMICS_ARCHIVE
        if not downloaded.is_file():
            raise SampleDataError(
                f"could not download {PYRADIOMICS_WHAT} from {PYPI}: pip wrote no " f"{PYRADIOMICS_ARCHIVE}"
            )
        verify_pyradiomics(downloaded)
        atomic_write(archive, lambda target: os.replace(downloaded, target))
    return archive


def download_mricron_data(cache: Path) -> Path:
    """The ``mricron-data`` .deb in ``cache``, fetched with ``apt-get download`` unless it is there already."""
    existing = sorted(cache.glob(f"{MRICRON_PACKAGE}_*.deb"))
    if existing:
        return existing[-1]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".apt-") as tmp:
        os.chmod(tmp, 0o755)  # apt drops privileges to its sandbox user, which must be able to write here
        command = ["apt-get", "download", MRICRON_PACKAGE]
        try:
            run_download(command, MRICRON_WHAT, DEBIAN, Path(tmp))
        except SampleDataError as err:
            if not re.search(r"Unable to locate|no candidate|Can't select", str(err)):
                raise
            run_download(
                ["apt-get", "update"], f"{MRICRON_WHAT} (package lists; apt-get update needs root)", DEBIAN, Path(tmp)
            )
            run_download(command, MRICRON_WHAT, DEBIAN, Path(tmp))
        debs = sorted(Path(tmp).glob(f"{MRICRON_PACKAGE}_*.deb"))
        if not debs:
            raise SampleDataError(f"could not download {MRICRON_WHAT} from {DEBIAN}: apt-get wrote no .deb")
        target = cache / debs[-1].name
        atomic_write(target, lambda tmp_target: os.replace(debs[-1], tmp_target))
    return target


def extract_pyradiomics_cases(archive: Path, dest: Path, cases: tuple[str, ...]) -> dict[str, Path]:
    """Copy ``data/<case>_{image,label}.nrrd`` (and the licence) out of the source tarball into ``dest``."""
    prefix = f"pyradiomics-{PYRADIOMICS_VERSION}/"
    wanted = {f"data/{case}_{kind}.nrrd" for case in cases for kind in ("image", "label")} | {"LICENSE.txt"}
    written: dict[str, Path] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = member.name[len(prefix) :] if member.name.startswith(prefix) else None
                if name not in wanted or not member.isfile():
                    continue
                source = tar.extractfile(member)
                written[name] = atomic_write(
                    dest / Path(name).name, lambda tmp, source=source: _copy_stream(source, tmp)
                )
    except (tarfile.TarError, OSError, EOFError) as err:
        raise SampleDataError(f"{archive}: cannot read the pyradiomics source tarball ({err})") from err
    missing = sorted(wanted - set(written))
    if missing:
        raise SampleDataError(f"{archive}: the tarball lacks {', '.join(missing)}")
    return written


def _copy_stream(source: IO[bytes], target: Path) -> None:
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out)


def extract_mricron_templates(deb: Path, dest: Path) -> dict[str, Path]:
    """Unpack the .deb with ``dpkg -x`` (no root needed) and keep the Colin27 T1, the AAL atlas and the licence."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".deb-") as tmp:
        try:
            subprocess.run(["dpkg", "-x", str(deb), tmp], check=True, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as err:
            detail = getattr(err, "stderr", "") or err
            raise SampleDataError(f"{deb}: cannot unpack with dpkg -x ({str(detail).strip()})") from err
        sources = {name: Path(tmp) / MRICRON_TEMPLATES / name for name in MRICRON_FILES}
        sources["copyright"] = Path(tmp) / "usr/share/doc" / MRICRON_PACKAGE / "copyright"
        written = {}
        for name, source in sources.items():
            if not source.is_file():
                raise SampleDataError(f"{deb}: the package lacks {source.relative_to(tmp)}")
            written[name] = atomic_write(dest / name, lambda target, source=source: shutil.copyfile(source, target))
    return written
