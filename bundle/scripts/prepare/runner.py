"""Preparing the cases of one dataset: in parallel, with a progress bar, one line per bad case, and a summary.

A case is prepared by :func:`prepare_case` in a worker process: the reader loads it, the label is checked against
the image's grid (:mod:`.geometry`) and its values against the task registry (:mod:`.labels`), both are truly
reoriented and written through :mod:`.staging`. A problem of one case is one ``FAILED`` line; the others go on.
"""

from __future__ import annotations

import multiprocessing
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tqdm import tqdm

from ..cli import debugging
from ..errors import HermesError
from ..registry import TaskRegistry
from .cases import CaseProblem, SourceCase, Volume
from .datalists import dataset_items, write_dataset_datalist
from .geometry import check_same_grid, reorient
from .labels import mapped_label
from .readers import READERS
from .splits import official_sections
from .staging import case_dir, is_prepared, remove_stale_staging, write_case

#: The bundle's task registry (label values, background labels, sequence keys).
TASK_REGISTRY = Path(__file__).resolve().parents[2] / "configs" / "task_registry.json"
#: Missing official cases listed one per line before the rest are only counted.
MISSING_LINES = 10


@lru_cache(maxsize=None)
def registry() -> TaskRegistry:
    return TaskRegistry.load(TASK_REGISTRY)


def prepare_case(case: SourceCase, out_dir: str) -> tuple[str, str | None]:
    """Prepare one case; returns (case id, None) or (case id, the problem in one line)."""
    try:
        image, label = READERS[case.dataset].load(case, registry())
        label = check_same_grid(image, label)
        label = Volume(mapped_label(label.array, registry(), case.dataset), label.affine)
        write_case(case_dir(Path(out_dir), case.dataset, case.case_id), reorient(image), reorient(label))
    except (CaseProblem, HermesError) as err:
        return case.case_id, str(err).splitlines()[0]
    except Exception as err:  # a damaged file, a full disk, a reader's surprise: this case's problem, never the run's
        if debugging():
            traceback.print_exc()
        return case.case_id, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return case.case_id, None


@dataclass
class DatasetReport:
    """What happened to one dataset's cases."""

    dataset: str
    prepared: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    outside_splits: int = 0
    not_found: str | None = None
    datalist: Path | None = None

    @property
    def problems(self) -> int:
        return len(self.failed) + (1 if self.not_found else 0)

    def summary(self, allow_missing: bool) -> str:
        if self.not_found:
            return f"{self.dataset}: not prepared ({self.not_found})"
        missing = f", {len(self.missing)} official cases not in the download" if self.missing else ""
        if missing and allow_missing:
            missing += " (allowed)"
        outside = f", {self.outside_splits} not in the official splits (skipped)" if self.outside_splits else ""
        return (
            f"{self.dataset}: {len(self.prepared)} prepared, {len(self.already)} already prepared, "
            f"{len(self.failed)} failed{missing}{outside}"
        )


def say(line: str) -> None:
    """One line on stderr that does not break a progress bar."""
    tqdm.write(line, file=sys.stderr)


def prepare_dataset(
    dataset: str,
    src: Path,
    out_dir: Path,
    workers: int = 1,
    overwrite: bool = False,
    allow_missing: bool = False,
    searching: bool = False,
) -> DatasetReport:
    """Prepare every case of the official splits found under ``src``; write ``out_dir/<dataset>/datalist.json``.

    ``searching``: ``src`` is a folder that may or may not hold this dataset (``--all``); finding nothing is no failure.
    """
    report = DatasetReport(dataset)
    reader = READERS[dataset]
    found = reader.find(src, dataset)
    if not found.cases and not found.problems:
        report.not_found = f"{src} does not look like the {dataset} download: expected {reader.RELEASE}"
        if not searching:
            say(f"FAILED {dataset}: {report.not_found}")
        return report
    sections = official_sections(dataset)
    cases = [case for case in found.cases if case.official_id in sections]
    report.outside_splits = len({c.official_id for c in found.cases if c.official_id not in sections})
    for official, name, problem in found.problems:
        if official in sections:
            report.failed.append(name)
            say(f"FAILED {name}: {problem}")
    seen = {case.official_id for case in found.cases} | {official for official, _, _ in found.problems}
    report.missing = [official for official in sections if official not in seen]
    if report.missing and not allow_missing:
        for official in report.missing[:MISSING_LINES]:
            report.failed.append(official)
            say(f"FAILED {dataset} case {official}: missing case: not found under {src} ({reader.RELEASE})")
        if len(report.missing) > MISSING_LINES:
            report.failed.extend(report.missing[MISSING_LINES:])
            say(f"FAILED {dataset}: {len(report.missing) - MISSING_LINES} more official cases not found under {src}")

    dataset_dir = out_dir / dataset
    remove_stale_staging(dataset_dir)
    todo = []
    for case in cases:
        if not overwrite and is_prepared(case_dir(out_dir, dataset, case.case_id)):
            report.already.append(case.case_id)
        else:
            todo.append(case)
    for case_id, problem in _run(todo, out_dir, workers, dataset):
        if problem is None:
            report.prepared.append(case_id)
        else:
            report.failed.append(case_id)
            source = next(c.source for c in todo if c.case_id == case_id)
            say(f"FAILED {case_id} ({source}): {problem}")
    items = dataset_items(dataset_dir, [(case, sections[case.official_id]) for case in cases])
    report.datalist = write_dataset_datalist(dataset_dir, items)
    return report


def _run(todo: list[SourceCase], out_dir: Path, workers: int, dataset: str):
    """(case id, problem or None) of every case, in a pool of ``workers`` processes, with a progress bar."""
    bar = tqdm(total=len(todo), desc=dataset, unit="case", file=sys.stderr, disable=not todo)
    try:
        if workers <= 1 or len(todo) <= 1:
            for case in todo:
                yield prepare_case(case, str(out_dir))
                bar.update()
            return
        context = multiprocessing.get_context("forkserver")  # workers fork from a clean server, not from this process
        context.set_forkserver_preload([__name__])
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(prepare_case, case, str(out_dir)): case for case in todo}
            for future in as_completed(futures):
                try:
                    yield future.result()
                except Exception as err:  # a worker that died (killed, out of memory) fails its case only
                    yield futures[future].case_id, f"the worker preparing it stopped ({type(err).__name__}: {err})"
                bar.update()
    finally:
        bar.close()
