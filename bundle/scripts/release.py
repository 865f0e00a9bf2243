"""``python -m scripts.release [--output_dir DIR] [--overwrite true]``: the bundle as the Model Zoo ships it, one zip.

Run from the bundle folder. Writes ``hermes_universal_segmentation_v<version>.zip`` (``version`` of
configs/metadata.json) into ``--output_dir`` (default ``../dist``, beside the bundle folder, so that the archive never
lands in the bundle it packs). The zip holds one top-level folder ``hermes_universal_segmentation/`` with what the
bundle needs at run time and nothing else, which is what ``python -m monai.bundle download --name
hermes_universal_segmentation --url URL`` unpacks:

- ``configs/``, ``scripts/``, ``docs/`` (caches, hidden files and temporaries left out), ``LICENSE``,
  ``large_files.yml``;
- ``models/``: weights (``*.pt``, ``*.pth``, ``*.ts``, ``*.onnx``) and their task lists (``*.tasks.json``) when
  present, except a file in the published checkpoint layout: that is the authors' file, which carries no licence, so
  the archive points at it through ``large_files.yml`` instead of shipping it (``--include_published true`` ships it
  anyway, e.g. for a private copy);
- never run folders (``runs/``), outputs (``eval/``), MLflow stores, caches, lock or staging files, or anything else at
  the bundle root.

Refused, with one line naming the files: a file over 25 MB outside ``models/`` (the Model Zoo's limit; weights come
through ``large_files.yml``), a required file missing (metadata, inference config, model card, licences, manifest), or
an existing archive without ``--overwrite true``. The archive is written atomically: it is complete or absent.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .cli import flag, run_command, set_debug
from .errors import SetupError
from .io.atomic import atomic_write

BUNDLE_NAME = "hermes_universal_segmentation"
#: What a released bundle holds at its root: folders shipped whole (less caches and temporaries) and single files.
SHIPPED_FOLDERS = ("configs", "scripts", "docs")
SHIPPED_FILES = ("LICENSE", "large_files.yml")
#: ``models/`` ships only these (weights and the task list written beside exported weights).
MODEL_SUFFIXES = (".pt", ".pth", ".ts", ".onnx", ".tasks.json")
#: A bundle is not complete without these.
REQUIRED = (
    "configs/metadata.json",
    "configs/inference.json",
    "docs/README.md",
    "docs/data_license.txt",
    "LICENSE",
    "large_files.yml",
)
#: The Model Zoo refuses bundles holding a file over 25 MB; only weights (downloaded, or shipped in models/) may be.
MAX_FILE_BYTES = 25_000_000
_SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ipynb_checkpoints", "mlruns"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".tmp", ".lock", ".swp", ".swo", ".bak", ".orig", ".log", "~")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip entries carry no build-machine time: equal inputs, equal archive


def _skipped(path: Path) -> bool:
    """Caches, hidden files (editor state, .env files, staging files of the atomic writer) and temporaries."""
    name = path.name
    return name.startswith(".") or name in _SKIPPED_DIRS or name.endswith(_SKIPPED_SUFFIXES) or ".tmp" in name


def _walk(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.iterdir()):
        if _skipped(path) or path.is_symlink():
            continue
        if path.is_dir():
            yield from _walk(path)
        elif path.is_file():
            yield path


def is_published_weights(path: Path) -> bool:
    """True for a checkpoint in the authors' published layout (their module names), read without loading tensors."""
    import torch

    from .checkpoint_names import is_published_layout
    from .weights import held_weights

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        weights, _ = held_weights(checkpoint, str(path))
    except Exception:  # not a checkpoint at all: shipped or not like any other file of models/
        return False
    return is_published_layout(weights)


def bundle_files(bundle: Path, include_published: bool = False) -> tuple[list[Path], list[str]]:
    """The files the archive holds (relative to ``bundle``) and what was left out at the root or in models/, and why."""
    files: list[Path] = []
    left_out: list[str] = []
    for name in SHIPPED_FOLDERS:
        if (bundle / name).is_dir():
            files += [p.relative_to(bundle) for p in _walk(bundle / name)]
    files += [Path(name) for name in SHIPPED_FILES if (bundle / name).is_file()]
    models = bundle / "models"
    if models.is_dir():
        for path in _walk(models):
            relative = path.relative_to(bundle)
            if not path.name.endswith(MODEL_SUFFIXES):
                left_out.append(f"{relative} (not weights)")
            elif not include_published and path.suffix in (".pt", ".pth") and is_published_weights(path):
                left_out.append(
                    f"{relative} (the published checkpoint: it has no licence to re-host; "
                    "large_files.yml points at the authors' file)"
                )
            else:
                files.append(relative)
    shipped_roots = {*SHIPPED_FOLDERS, *SHIPPED_FILES, "models"}
    left_out += [
        f"{p.name}{'/' if p.is_dir() else ''}" for p in sorted(bundle.iterdir()) if p.name not in shipped_roots
    ]
    return sorted(files), left_out


def check_bundle(bundle: Path, files: list[Path]) -> str:
    """The bundle's version; refuses a bundle missing a required file or holding a file over the size limit."""
    missing = [name for name in REQUIRED if not (bundle / name).is_file()]
    if missing:
        raise SetupError(f"{bundle} is not a complete bundle: missing {', '.join(missing)}")
    too_large = [
        f"{p} ({(bundle / p).stat().st_size / 1e6:.1f} MB)"
        for p in files
        if p.parts[0] != "models" and (bundle / p).stat().st_size > MAX_FILE_BYTES
    ]
    if too_large:
        raise SetupError(
            f"files over {MAX_FILE_BYTES / 1e6:.0f} MB outside models/ cannot be released (Model Zoo "
            f"limit; large files come through large_files.yml): {', '.join(too_large)}"
        )
    try:
        version = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))["version"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SetupError(f"{bundle / 'configs' / 'metadata.json'}: no readable 'version' ({err})") from err
    return str(version)


def _write_zip(target: Path, bundle: Path, files: list[Path]) -> None:
    with zipfile.ZipFile(target, "w", allowZip64=True) as archive:
        for relative in files:
            source = bundle / relative
            info = zipfile.ZipInfo(f"{BUNDLE_NAME}/{relative.as_posix()}", date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            # weights barely compress: store them; deflate text
            info.compress_type = zipfile.ZIP_STORED if relative.parts[0] == "models" else zipfile.ZIP_DEFLATED
            with open(source, "rb") as reader, archive.open(info, "w", force_zip64=True) as writer:
                for block in iter(lambda: reader.read(1 << 20), b""):
                    writer.write(block)


def build_release(
    bundle: str | Path = ".",
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    include_published: bool = False,
) -> dict:
    """Write the release archive; returns {"path", "files", "left_out", "bytes"}."""
    bundle = Path(bundle).resolve()
    output = Path(output_dir).expanduser().resolve() if output_dir else bundle.parent / "dist"
    files, left_out = bundle_files(bundle, include_published)
    version = check_bundle(bundle, files)
    target = output / f"{BUNDLE_NAME}_v{version}.zip"
    if target.exists() and not overwrite:
        raise SetupError(
            f"{target} already exists; pass --overwrite true to replace it (or bump the version in "
            "configs/metadata.json)"
        )
    atomic_write(target, lambda tmp: _write_zip(tmp, bundle, files), overwrite=overwrite, durable=True)
    return {"path": target, "files": files, "left_out": left_out, "bytes": target.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.release",
        description="Build hermes_universal_segmentation_v<version>.zip, the bundle as "
        "the Model Zoo ships it (run from the bundle folder).",
    )
    parser.add_argument("--bundle_path", default=".", help="the bundle folder (default: the current folder)")
    parser.add_argument("--output_dir", default=None, help="where the zip goes (default: ../dist beside the bundle)")
    parser.add_argument("--overwrite", default="false", help="true: replace an existing archive of this version")
    parser.add_argument(
        "--include_published",
        default="false",
        help="true: also ship a published-format checkpoint found in models/ (by default it is left "
        "out: the authors' file is not re-hosted)",
    )
    parser.add_argument("--debug", default="false", help="true: show the traceback of a failure")
    args = parser.parse_args(argv)
    set_debug(args.debug)
    built = build_release(
        args.bundle_path,
        args.output_dir,
        flag(args.overwrite, "overwrite"),
        flag(args.include_published, "include_published"),
    )
    weights = [str(p) for p in built["files"] if p.parts[0] == "models"]
    print(
        f"wrote {built['path']}: {len(built['files'])} files, {built['bytes'] / 1e6:.1f} MB, top folder "
        f"{BUNDLE_NAME}/; weights: {', '.join(weights) or 'none (large_files.yml fetches them)'}"
    )
    if built["left_out"]:
        print(f"left out: {', '.join(built['left_out'])}")
    return 0


if __name__ == "__main__":
    run_command(main)
