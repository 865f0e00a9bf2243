"""The one case loop of inference and evaluation: an ignite engine that reports a failed case and goes on.

Each iteration hands one case (a dict naming its input) to a *step*, an object with:
- ``prepare() -> str``: checks every setting and loads the weights before the first case; a ``HermesError`` here
  ends the run with one line (nothing has been computed yet);
- ``begin(cases)``: called once with the cases in the order they will run (a step may start reading ahead);
- ``__call__(case) -> str | Future``: processes one case and returns the line printed for it, or a future of that
  line when the step finishes the case in the background (outcomes are still reported in case order); any
  exception fails only that case, ``AlreadyComplete`` skips it;
- ``complete(engine)``: runs once after the last case (write tables, put numbers into ``engine.state.metrics``);
- ``release()``: lets go of what ``prepare`` took (the output folder's lock) however the run ended;
- ``continue_hint``: what to type to finish an interrupted batch.
Because it is an ignite engine with a ``handlers`` list, MONAI's ``--tracking mlflow`` attaches to it like to any
evaluator. Exit status: 1 when the setup or any case failed, 130 after Ctrl-C (with the summary of what finished).
Under ``torchrun`` each process runs its share of the cases (``scripts.ranks``); rank 0 prints the one summary of all
of them and every process exits with the same status.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

import torch
from ignite.engine import Events
from monai.engines import Workflow

from .errors import HermesError, one_line
from .ranks import Ranks


class AlreadyComplete(Exception):  # noqa: N818 - a case outcome, not an error
    """Raised by a step for a case whose outputs are already complete (``--skip_existing``)."""


class CaseStep(Protocol):
    continue_hint: str

    def prepare(self) -> str:
        """Checks before the first case; returns the line describing the run."""

    def begin(self, cases: Sequence[dict[str, Any]]) -> None:
        """Receives the cases in the order they will run, before the first."""

    def __call__(self, case: dict[str, Any]) -> str | Future:
        """Processes one case; returns its one-line outcome (or a future of it)."""

    def complete(self, engine: Any) -> None:
        """Finishes the run (tables, summaries) after the last case."""

    def release(self) -> None:
        """Lets go of what ``prepare`` took (the output folder's lock), however the run ended."""


@dataclass
class CaseOutcome:
    source: str
    status: str  # "done", "skipped" (already complete), "failed"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class RunSummary:
    """Collects outcomes and prints them as they come; ``failed`` drives the exit status."""

    total: int = 0
    stream: TextIO | None = None  # None: whatever sys.stdout is when printing
    outcomes: list[CaseOutcome] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def record(self, outcome: CaseOutcome) -> None:
        self.outcomes.append(outcome)
        status = "FAILED" if outcome.status == "failed" else outcome.status
        self.say(
            f"[{len(self.outcomes)}/{self.total}] {status} {outcome.source} ({outcome.seconds:.1f} s): "
            f"{outcome.detail}"
        )

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def report(self, elapsed: float, interrupted: bool = False) -> None:
        line = (
            f"Summary: {self.count('done')} done, {self.count('skipped')} already complete, "
            f"{len(self.failed)} failed"
        )
        if interrupted:
            line += f", {self.total - len(self.outcomes)} not run (interrupted)"
        self.say(f"{line}, {elapsed:.1f} s in total")
        for outcome in self.failed:
            self.say(f"  failed: {outcome.detail}")


class CaseEngine(Workflow):
    """Runs ``step`` on every case of ``cases``; ``problems`` are inputs already known to be unusable.

    Args:
        cases: the cases to process (dicts with at least ``source``).
        step: the per-case work (see the module docstring).
        device: where the network runs (kept in ``engine.state.device``).
        problems: ``(source, reason)`` pairs reported as failed without running.
        handlers: ignite/MONAI handlers (``--tracking mlflow`` adds its handler here).
        ranks: the processes of a ``torchrun`` run (each takes every N-th case and problem); None: this process
            runs every case.
    """

    def __init__(
        self,
        cases: Sequence[dict[str, Any]],
        step: CaseStep,
        device: torch.device | str = "cpu",
        problems: Sequence[tuple[str, str]] = (),
        handlers: Sequence[Any] | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.ranks = ranks or Ranks(distributed=False)
        self.cases = self.ranks.share(cases)
        super().__init__(
            device=device, max_epochs=1, data_loader=self.cases, epoch_length=len(self.cases), decollate=False
        )
        self.step = step
        self.problems = self.ranks.share(problems)
        self.summary = RunSummary(total=len(self.cases) + len(self.problems))
        self.setup_error: str | None = None
        self._unfinished: deque[tuple[str, float, Future]] = deque()
        self.add_event_handler(Events.EPOCH_COMPLETED, self._complete)  # before the handlers: metrics are ready
        if handlers:
            self._register_handlers(handlers)

    def _iteration(self, engine: Any, case: dict[str, Any]) -> dict[str, Any]:
        began = time.perf_counter()
        source = str(case.get("source", case.get("image", "case")))
        try:
            finished: Any = self.step(case)
        except Exception as err:  # one bad case is reported; the batch goes on
            finished = err
        if not isinstance(finished, Future):  # finished here: wrap it so every outcome is read the same way
            done: Future = Future()
            if isinstance(finished, BaseException):
                done.set_exception(finished)
            else:
                done.set_result(finished)
            finished = done
        self._unfinished.append((source, began, finished))
        self._record_finished(wait=False)
        return {"source": source}

    def _record_finished(self, wait: bool) -> None:
        """Report the cases finished so far, in case order (``wait``: all of them)."""
        while self._unfinished and (wait or self._unfinished[0][2].done()):
            source, began, finished = self._unfinished.popleft()
            try:
                detail, status = finished.result(), "done"
            except AlreadyComplete as skipped:
                detail, status = str(skipped), "skipped"
            except Exception as err:  # one bad case is reported; the batch goes on
                detail, status = one_line(err), "failed"
                if source not in detail:
                    detail = f"{source}: {detail}"
            self.summary.record(CaseOutcome(source, status, time.perf_counter() - began, detail))
        self.state.metrics.update(
            {"cases_done": float(self.summary.count("done")), "cases_failed": float(len(self.summary.failed))}
        )

    def _complete(self, engine: Any) -> None:
        self._record_finished(wait=True)
        self.step.complete(self)

    def run(self) -> RunSummary:  # type: ignore[override]
        """Process every case, print a line per case and the summary. Never raises for a bad case or setting."""
        try:
            return self._run_cases()
        finally:  # a failed setup or Ctrl-C too: a later run in this process must find the folder free
            self.step.release()

    def _run_cases(self) -> RunSummary:
        started = time.perf_counter()
        try:
            self.summary.say(self.step.prepare())
        except (HermesError, ValueError, OSError) as err:
            self.setup_error = one_line(err)
            self.summary.say(f"error: {self.setup_error}")
            return self.summary
        for source, reason in self.problems:
            self.summary.record(CaseOutcome(source, "failed", 0.0, f"{source}: {reason}"))
        try:
            self.step.begin(self.cases)
            if self.cases:
                super().run()
            else:
                self._complete(self)
        except KeyboardInterrupt:
            self.summary.report(time.perf_counter() - started, interrupted=True)
            self.summary.say(
                f"Interrupted (Ctrl-C). Finished cases are complete; to continue: " f"{self.step.continue_hint}"
            )
            raise SystemExit(130) from None
        self._report_all(time.perf_counter() - started)
        return self.summary

    def _report_all(self, elapsed: float) -> None:
        """The summary: this process's, or under ``torchrun`` every rank's outcomes, printed once by rank 0."""
        everyone = self.ranks.gather(self.summary.outcomes)
        if len(everyone) == 1:
            self.summary.report(elapsed)
            return
        self.summary.outcomes = [outcome for outcomes in everyone for outcome in outcomes]
        self.summary.total = len(self.summary.outcomes)
        if self.ranks.is_main:
            self.summary.report(elapsed)

    def exit_if_failed(self) -> None:
        """Last step of a workflow: exit status 1 when the setup or any case failed (on any rank)."""
        failed = any(self.ranks.gather(self.setup_error is not None or bool(self.summary.failed)))
        self.ranks.stop()
        if failed:
            raise SystemExit(1)
