"""The inference step of the case engine: read -> predict -> write for every case, the device kept busy.

Reading (and resampling) of the next cases and writing of the previous ones run in ``workers`` background threads
(``--workers N``); the engine still reports every case in order, and a case that fails to read, predict or write
fails alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..errors import CaseError, HermesError
from ..inference.inputs import described
from ..inference.overlay import draw_case_overlay
from ..inference.task_selection import TaskSelector, contexts_of, merge_groups
from ..predict import channel_layout
from ..ranks import Ranks
from .case import Case, CaseResult
from .overlap import Overlap
from .predict import CasePredictor
from .read import CaseReader
from .write import CaseWriter


def draw_overlay(path: Path, result: CaseResult) -> None:
    """The quick-look picture of a result, on the network grid."""
    names = [group.name for group in result.groups]
    image = result.case.image.cpu()
    draw_case_overlay(path, image, result.network_labels, names, result.case.name)


class SegmentCases:
    """Segment every case into ``writer``'s folder.

    Args:
        reader: input -> ``Case``.
        predictor: weights, windows and the way back to the input's grid.
        task_selector: turns ``--tasks`` into output labels for the case's modality.
        writer: output names, completeness, staging.
        workers: background threads for reading ahead and writing behind (0: none).
        profile: record per-stage seconds in each sidecar and the summary.
        ranks: this process's share of the cases under ``torchrun``.
        settings: recorded in every sidecar.
    """

    continue_hint = "run the same command again with --skip_existing true"

    def __init__(
        self,
        reader: CaseReader,
        predictor: CasePredictor,
        task_selector: TaskSelector,
        writer: CaseWriter,
        workers: int = 0,
        profile: bool = False,
        ranks: Ranks | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.reader = reader
        self.predictor = predictor
        self.task_selector = task_selector
        self.writer = writer
        self.workers = int(workers)
        self.profile = bool(profile)
        self.ranks = ranks or Ranks(distributed=False)
        self.settings = dict(settings or {})
        self.overlap: Overlap | None = None
        self.stage_totals: dict[str, float] = {}

    def prepare(self) -> str:
        self.overlap = Overlap(self.workers)
        self.task_selector.validate()
        self.reader.modality.check()
        self.ranks.start()
        claimed: HermesError | None = None
        if self.ranks.is_main:
            try:
                self.writer.prepare(lock=True)
            except HermesError as err:
                claimed = err
        self.ranks.barrier()  # the other ranks write into the folder rank 0 has claimed
        if claimed is not None:
            raise claimed
        if not self.ranks.is_main:
            self.writer.prepare(lock=False)
        self.predictor.load()
        shared = f", rank {self.ranks.rank} of {self.ranks.size}" if self.ranks.size > 1 else ""
        return f"Segmenting into {self.writer.output_dir} {self.predictor.describe()}{shared}"

    def begin(self, cases: Sequence[dict[str, Any]]) -> None:
        """Start reading ahead (the engine calls this with the cases in the order it will run them)."""
        assert self.overlap is not None
        self.overlap.start(cases, self._read)

    def _read(self, item: dict[str, Any]) -> tuple[Case | None, list[Path] | None]:
        described_item = described(item)
        # decided before any work: nothing a user had is replaced unasked (AlreadyComplete skips the case)
        replaces = self.writer.check(described_item["source"], described_item["name"])
        return self.reader(described_item), replaces

    def __call__(self, item: dict[str, Any]) -> str | Future:
        assert self.overlap is not None
        case, replaces = self.overlap.take(item)
        try:
            groups = self.task_selector.resolve(case.modality.name)
        except CaseError as err:
            raise CaseError(f"{case.source}: {err}") from err
        contexts = contexts_of(groups, self.task_selector.registry)
        probs = self.predictor.probabilities(case, contexts)
        merged = merge_groups(probs, channel_layout(contexts), groups)
        del probs
        result = self.predictor.result(
            case,
            groups,
            merged,
            masks=self.writer.needs_masks,
            probabilities=self.writer.save_probabilities,
            network_labels=self.writer.save_overlay,
        )
        del merged
        result.settings = {
            **self.settings,
            "threshold": self.predictor.threshold,
            "device": str(self.predictor.device),
            "invert": self.predictor.invert_mode,
            "profile": self.profile,
        }
        tasks = sum(len(g.members) for g in groups)
        summary = (
            f"modality {case.modality.name} ({case.modality.source}), {len(groups)} label(s) from {tasks} task(s) "
            f"in {len(contexts)} pass(es) per window, {int((result.labels > 0).sum())} voxel(s) labelled"
        )
        return self.overlap.later(lambda: self._write(result, replaces, summary))

    def _write(self, result: CaseResult, replaces: list[Path], summary: str) -> str:
        weights = self.predictor.weights.as_json() if self.predictor.weights else {}
        paths = self.writer.write(result, replaces, weights, draw_overlay)
        line = f"{summary} -> {paths.label_map}"
        if self.profile:
            seconds = result.case.clock.as_json()
            for stage, value in seconds.items():
                self.stage_totals[stage] = self.stage_totals.get(stage, 0.0) + value
            line += " [" + ", ".join(f"{stage} {value:.2f} s" for stage, value in seconds.items()) + "]"
        return line

    def complete(self, engine: Any) -> None:
        """After the last case: the statistics table of every rank's cases (``--statistics true``), the per-stage
        totals of this rank's cases (``--profile true``)."""
        if self.writer.statistics:
            rows = [row for part in self.ranks.gather(self.writer.statistics_rows) for row in part]
            kept = [name for part in self.ranks.gather(self.writer.kept) for name in part]
            if self.ranks.is_main:
                self.writer.kept = kept
                table = self.writer.write_statistics_table(rows)
                if table is not None:
                    engine.summary.say(f"Statistics: {table}")
        if self.profile and self.stage_totals:
            totals = ", ".join(f"{stage} {value:.2f} s" for stage, value in self.stage_totals.items())
            engine.summary.say(f"Profile (seconds summed over this process's cases): {totals}")

    def release(self) -> None:
        if self.overlap is not None:
            self.overlap.close()
        self.writer.folder.release()
