"""What a person reads during and after a run: one line per case, then the summary."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class CaseOutcome:
    source: str
    ok: bool
    seconds: float = 0.0
    detail: str = ""


@dataclass
class RunSummary:
    """Collects outcomes and prints them; ``failed`` drives the exit code."""

    total: int = 0
    stream: TextIO | None = None  # None: whatever sys.stdout is when printing
    outcomes: list[CaseOutcome] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def record(self, outcome: CaseOutcome) -> None:
        self.outcomes.append(outcome)
        status = "done" if outcome.ok else "FAILED"
        prefix = f"[{len(self.outcomes)}/{self.total}]" if self.total else "[-]"
        self.say(f"{prefix} {status} {outcome.source} ({outcome.seconds:.1f} s): {outcome.detail}")

    @property
    def failed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def report(self, elapsed: float) -> str:
        done = len(self.outcomes) - len(self.failed)
        lines = [f"Summary: {done} done, {len(self.failed)} failed, {elapsed:.1f} s in total"]
        lines += [f"  failed: {o.detail}" for o in self.failed]
        text = "\n".join(lines)
        self.say(text)
        return text
