"""Which tasks to segment: turn ``--tasks`` into label groups for the image's modality.

Rules (documented in docs/README.md):
- ``liver`` (a name without dataset): every task of that name whose dataset matches the image's modality; their
  probabilities are averaged into one output label. Matching: a dataset matches modality ``m`` when its modality
  (or one of its sequences) is ``m``; for ``mr`` (MRI of unknown sequence) every MRI dataset matches (mr, t1, t2, cine).
- ``amos_ct/liver``: exactly that task. ``amos_ct``: every task of that dataset, one label each.
- nothing given (or ``all``): every task name of the modality's datasets, merged by name as for ``liver``.
Names are case-insensitive; ``_`` and ``-`` may stand for spaces in task names (``right_kidney``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import CaseError, SetupError
from .modality import MR_FAMILY, modality_names_of_dataset


@dataclass(frozen=True)
class TaskGroup:
    """One output label: the tasks whose probabilities are averaged for it."""

    label: int
    name: str
    task_ids: tuple[int, ...]
    qualified: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "task_ids": list(self.task_ids), "tasks": list(self.qualified)}


def parse_task_request(tasks: Any) -> list[str] | None:
    """Accept what a command line may pass (``"liver,spleen"``, a tuple from fire, a list); ``None`` = default set."""
    if tasks is None:
        return None
    if isinstance(tasks, str):
        items: Iterable[Any] = tasks.split(",")
    elif isinstance(tasks, Sequence):
        items = [part for item in tasks for part in str(item).split(",")]
    else:
        raise SetupError(f"--tasks: expected names separated by commas, got {tasks!r}")
    tokens = [str(t).strip() for t in items if str(t).strip()]
    if not tokens or [t.lower() for t in tokens] == ["all"]:
        return None
    return tokens


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


class TaskSelector:
    """Validates a task request against the registry once, then resolves it per case for the case's modality."""

    def __init__(self, registry: Any, tasks: Any = None) -> None:
        self.registry = registry
        self.request = parse_task_request(tasks)
        self._datasets = {name.lower(): name for name in registry.datasets}
        self._validated = False

    # --- registry views -------------------------------------------------------------------------------------
    def datasets_for(self, modality: str) -> list[str]:
        """Datasets whose tasks apply to an image of ``modality`` (see module docstring)."""
        wanted = set(MR_FAMILY) if modality == "mr" else {modality}
        return [d for d in self.registry.datasets if modality_names_of_dataset(self.registry, d) & wanted]

    def _tasks(self, datasets: Iterable[str] | None = None) -> list[Any]:
        keep = None if datasets is None else set(datasets)
        return [t for t in self.registry.tasks if keep is None or t.dataset in keep]

    # --- validation ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise SetupError naming close matches when a requested name exists in no dataset."""
        for token in self.request or []:
            if self._lookup_static(token) is None:
                raise SetupError(f"--tasks: unknown task '{token}'; {self._suggest(token)}")
        self._validated = True

    def _lookup_static(self, token: str) -> list[Any] | None:
        """Tasks named by a preset or qualified name, ``[]`` for a bare task name that exists, None if unknown."""
        key = token.strip().lower()
        if key in self._datasets:
            return self._tasks([self._datasets[key]])
        if "/" in key:
            dataset, _, name = key.partition("/")
            found = [t for t in self._tasks([self._datasets.get(dataset, "")]) if _norm(t.name) == _norm(name)]
            return found or None
        return [] if any(_norm(t.name) == _norm(key) for t in self.registry.tasks) else None

    def _suggest(self, token: str) -> str:
        names = sorted({_norm(t.name) for t in self.registry.tasks})
        qualified = sorted({f"{t.dataset}/{_norm(t.name)}" for t in self.registry.tasks})
        close = difflib.get_close_matches(_norm(token), names + qualified + sorted(self.registry.datasets), n=5, cutoff=0.6)
        hint = f"did you mean: {', '.join(close)}?" if close else "no similar name"
        return f"{hint} (datasets: {', '.join(self.registry.datasets)})"

    # --- resolution ------------------------------------------------------------------------------------------
    def resolve(self, modality: str) -> list[TaskGroup]:
        """Label groups for one image of ``modality``; raises CaseError when a name has no task for it."""
        if not self._validated:
            self.validate()
        pending: list[tuple[str, list[Any]]] = []
        if self.request is None:
            datasets = self.datasets_for(modality)
            if not datasets:
                raise CaseError(f"no dataset of the registry covers modality '{modality}'; pass --tasks")
            for name in dict.fromkeys(_norm(t.name) for t in self._tasks(datasets)):
                pending.append((name, [t for t in self._tasks(datasets) if _norm(t.name) == name]))
        else:
            for token in self.request:
                pending.extend(self._resolve_token(token, modality))
        groups: list[TaskGroup] = []
        seen: set[str] = set()
        for name, tasks in pending:
            if name in seen:
                continue
            seen.add(name)
            ids = tuple(dict.fromkeys(int(t.id) for t in tasks))
            qualified = tuple(f"{t.dataset}/{t.name}" for t in tasks)
            groups.append(TaskGroup(label=len(groups) + 1, name=name, task_ids=ids, qualified=qualified))
        return groups

    def _resolve_token(self, token: str, modality: str) -> list[tuple[str, list[Any]]]:
        key = token.strip().lower()
        if key in self._datasets:
            dataset = self._datasets[key]
            return [(f"{dataset}/{_norm(t.name)}", [t]) for t in self._tasks([dataset])]
        if "/" in key:
            found = self._lookup_static(key) or []
            return [(f"{found[0].dataset}/{_norm(found[0].name)}", found)]
        name = _norm(key)
        matching = [t for t in self._tasks(self.datasets_for(modality)) if _norm(t.name) == name]
        if not matching:
            elsewhere = [f"{t.dataset}/{_norm(t.name)}" for t in self.registry.tasks if _norm(t.name) == name]
            raise CaseError(
                f"task '{token}' has no task for modality '{modality}'; candidates: {', '.join(elsewhere)} "
                "(name one with --tasks DATASET/NAME, or pass --modality)"
            )
        return [(name, matching)]
