"""``python -m scripts.prepare DATASET --src RAW_DIR --dst OUT_DIR`` or ``python -m scripts.prepare --all ROOT --dst
OUT_DIR``: official downloads to NIfTI cases and the datalist ``OUT_DIR/datalist.json`` that ``train_published.json``
takes.

Options: ``--workers N`` (processes), ``--overwrite`` (redo prepared cases), ``--allow_missing`` (a partial download:
official cases absent from it are counted, not failures). Every bad case is one ``FAILED`` line; the run goes on,
ends with a summary per dataset, and exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import flag, run_command, set_debug
from ..errors import SetupError
from .datalists import write_combined_datalist
from .readers import READERS
from .runner import prepare_dataset, say
from .splits import split_datasets


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.prepare",
        description="Prepare the published Hermes datasets from their official downloads (see the model card, "
        "'Train the published model').",
    )
    parser.add_argument("dataset", nargs="?", help=f"one of {', '.join(READERS)}")
    parser.add_argument("--src", help="the dataset's download folder (its official layout, at any depth)")
    parser.add_argument("--all", metavar="ROOT", help="prepare every dataset found under ROOT")
    parser.add_argument("--dst", required=True, help="output folder (shared by all datasets)")
    parser.add_argument("--workers", type=int, default=1, help="cases prepared in parallel processes (default 1)")
    for name, meaning in (
        ("overwrite", "prepare cases again that are already prepared"),
        ("allow_missing", "official cases absent from the download are counted, not failures"),
        ("debug", "show the traceback of a failure"),
    ):
        parser.add_argument(f"--{name}", nargs="?", const="true", default="false", help=f"true: {meaning}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    set_debug(args.debug)
    overwrite, allow_missing = flag(args.overwrite, "overwrite"), flag(args.allow_missing, "allow_missing")
    if args.workers < 1:
        raise SetupError(f"--workers: expected a number >= 1, got {args.workers}")
    if (args.all is None) == (args.dataset is None) or (args.all is not None and args.src is not None):
        raise SetupError("name one DATASET with --src RAW_DIR, or give --all ROOT (without DATASET and --src)")
    if args.all is not None:
        root = Path(args.all).expanduser()
        if not root.is_dir():
            raise SetupError(f"--all: {root} is not a folder")
        jobs = [(dataset, root) for dataset in split_datasets()]
    else:
        if args.dataset not in READERS:
            raise SetupError(f"unknown dataset '{args.dataset}'; choose one of {', '.join(READERS)}")
        if args.src is None or not Path(args.src).expanduser().is_dir():
            raise SetupError(f"--src: {args.src} is not a folder (give the {args.dataset} download folder)")
        jobs = [(args.dataset, Path(args.src).expanduser())]
    out_dir = Path(args.dst).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)

    reports = []
    for dataset, src in jobs:
        searching = args.all is not None  # --all: a dataset that is not there is only skipped
        report = prepare_dataset(dataset, src, out_dir, args.workers, overwrite, allow_missing, searching)
        if searching and report.not_found:
            print(f"{dataset}: not found under {src} (skipped)")
            continue
        reports.append(report)
    datalist, counts = write_combined_datalist(out_dir, READERS)
    for report in reports:
        print(report.summary(allow_missing))
    print(f"datalist: {datalist} ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    failed = sum(report.problems for report in reports)
    if failed:
        say(
            f"error: {failed} problem(s) in {', '.join(r.dataset for r in reports if r.problems)}; see the FAILED lines"
        )
        return 1
    return 0


if __name__ == "__main__":
    run_command(main)
