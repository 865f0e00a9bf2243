"""Which tasks to segment: turn ``--tasks`` into output labels for the image's modality, and the passes they need.

Rules (documented in docs/README.md):
- ``liver`` (a name without dataset): every task of that name whose dataset matches the image's modality; their
  probabilities are averaged into one output label. A dataset matches modality ``m`` when its modality (or one of its
  sequences) is ``m``; for an MRI of unknown sequence every dataset of the registry's MR family matches.
- ``amos_ct/liver``: exactly that task. ``amos_ct``: every task of that dataset, one label each.
- nothing given (or ``all``): every distinct task name of the modality's datasets, from the fewest datasets that
  cover them all (greedy set cover, registry order breaks ties); a name several of those datasets have is averaged.
Names are case-insensitive; ``_`` and ``-`` may stand for spaces in task names (``right_kidney``).

Every dataset a label draws on costs one forward pass per window: the model runs each dataset's full task list plus a
null token (``scripts.predict.TaskContext``), as it was trained, and the requested channels are taken from it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CaseError, SetupError
from ..predict import TaskContext, dataset_contexts
from ..registry import Task, TaskRegistry, normalize_task_name


@dataclass(frozen=True)
class TaskGroup:
    """One output label: the tasks (each in its own dataset) whose probabilities are averaged for it."""

    label: int
    name: str
    members: tuple[Task, ...]

    @property
    def task_ids(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(task.id for task in self.members))

    @property
    def qualified(self) -> tuple[str, ...]:
        return tuple(f"{task.dataset}/{task.name}" for task in self.members)

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


def contexts_of(groups: Sequence[TaskGroup], registry: TaskRegistry) -> list[TaskContext]:
    """The forward passes the groups need: one per dataset they draw on, in registry order."""
    used = {task.dataset for group in groups for task in group.members}
    return dataset_contexts(registry, [name for name in registry.datasets if name in used])


def output_label_names(registry: TaskRegistry) -> list[str]:
    """Every name an output label can have with this registry (``liver``, ``amos_ct/liver``): the writer derives the
    names of a case's mask and probability files from them, literally."""
    names = dict.fromkeys(normalize_task_name(t.name) for t in registry.tasks)
    names.update(dict.fromkeys(f"{t.dataset}/{normalize_task_name(t.name)}" for t in registry.tasks))
    return list(names)


def merge_groups(probs: torch.Tensor, layout: dict[tuple[str, int], int], groups: Sequence[TaskGroup]) -> torch.Tensor:
    """One channel per group: the mean probability of its member tasks (``layout``: (dataset, id) -> channel)."""
    merged = [probs[[layout[(t.dataset, t.id)] for t in g.members]].float().mean(dim=0) for g in groups]
    return torch.stack(merged).to(probs.dtype)


class TaskSelector:
    """Validates a task request against the registry once, then resolves it per case for the case's modality."""

    def __init__(self, registry: TaskRegistry, tasks: Any = None) -> None:
        self.registry = registry
        self.request = parse_task_request(tasks)
        self._datasets = {name.lower(): name for name in registry.datasets}
        self._validated = False

    # --- registry views -------------------------------------------------------------------------------------
    def datasets_for(self, modality: str) -> list[str]:
        """Datasets whose tasks apply to an image of ``modality`` (see module docstring)."""
        return self.registry.datasets_for_modality(modality)

    def covering_datasets(self, modality: str) -> list[str]:
        """The fewest of the modality's datasets whose tasks name every structure any of them names (registry order)."""
        candidates = self.datasets_for(modality)
        names = {d: {normalize_task_name(t.name) for t in self.registry.tasks_of(d)} for d in candidates}
        uncovered = set().union(*names.values()) if names else set()
        chosen: list[str] = []
        while uncovered:
            best = max(candidates, key=lambda d: (len(names[d] & uncovered), -candidates.index(d)))
            chosen.append(best)
            uncovered -= names[best]
        return [d for d in candidates if d in chosen]

    def _tasks(self, datasets: Iterable[str] | None = None) -> list[Task]:
        keep = None if datasets is None else set(datasets)
        return [t for t in self.registry.tasks if keep is None or t.dataset in keep]

    # --- validation ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise SetupError naming close matches when a requested name exists in no dataset."""
        for token in self.request or []:
            if self._lookup_static(token) is None:
                raise SetupError(f"--tasks: unknown task '{token}'; {self._suggest(token)}")
        self._validated = True

    def _lookup_static(self, token: str) -> list[Task] | None:
        """Tasks named by a preset or qualified name, ``[]`` for a bare task name that exists, None if unknown."""
        key = token.strip().lower()
        if key in self._datasets:
            return self._tasks([self._datasets[key]])
        if "/" in key:
            dataset, _, name = key.partition("/")
            found = [
                t
                for t in self._tasks([self._datasets.get(dataset, "")])
                if normalize_task_name(t.name) == normalize_task_name(name)
            ]
            return found or None
        return [] if any(normalize_task_name(t.name) == normalize_task_name(key) for t in self.registry.tasks) else None

    def _suggest(self, token: str) -> str:
        names = sorted({normalize_task_name(t.name) for t in self.registry.tasks})
        qualified = sorted({f"{t.dataset}/{normalize_task_name(t.name)}" for t in self.registry.tasks})
        close = difflib.get_close_matches(
            normalize_task_name(token), names + qualified + sorted(self.registry.datasets), n=5, cutoff=0.6
        )
        hint = f"did you mean: {', '.join(close)}?" if close else "no similar name"
        return f"{hint} (datasets: {', '.join(self.registry.datasets)})"

    def most_channels(self) -> int:
        """The most task channels one case's passes stitch, over every modality the request can resolve for (what a
        case's memory estimate assumes)."""
        most = 1
        for modality in self.registry.modalities:
            try:
                groups = self.resolve(modality)
            except (CaseError, SetupError):
                continue
            most = max(most, sum(len(context.task_ids) for context in contexts_of(groups, self.registry)))
        return most

    # --- resolution ------------------------------------------------------------------------------------------
    def resolve(self, modality: str) -> list[TaskGroup]:
        """Label groups for one image of ``modality``; raises CaseError when a name has no task for it."""
        if not self._validated:
            self.validate()
        pending: list[tuple[str, list[Task]]] = []
        if self.request is None:
            datasets = self.covering_datasets(modality)
            if not datasets:
                raise CaseError(f"no dataset of the registry covers modality '{modality}'; pass --tasks")
            tasks = self._tasks(datasets)
            for name in dict.fromkeys(normalize_task_name(t.name) for t in tasks):
                pending.append((name, [t for t in tasks if normalize_task_name(t.name) == name]))
        else:
            for token in self.request:
                pending.extend(self._resolve_token(token, modality))
        groups: list[TaskGroup] = []
        seen: set[str] = set()
        for name, tasks in pending:
            if name in seen:
                continue
            seen.add(name)
            groups.append(TaskGroup(label=len(groups) + 1, name=name, members=tuple(tasks)))
        return groups

    def _resolve_token(self, token: str, modality: str) -> list[tuple[str, list[Task]]]:
        key = token.strip().lower()
        if key in self._datasets:
            dataset = self._datasets[key]
            return [(f"{dataset}/{normalize_task_name(t.name)}", [t]) for t in self._tasks([dataset])]
        if "/" in key:
            found = self._lookup_static(key) or []
            return [(f"{found[0].dataset}/{normalize_task_name(found[0].name)}", found)]
        name = normalize_task_name(key)
        matching = [t for t in self._tasks(self.datasets_for(modality)) if normalize_task_name(t.name) == name]
        if not matching:
            elsewhere = [
                f"{t.dataset}/{normalize_task_name(t.name)}"
                for t in self.registry.tasks
                if normalize_task_name(t.name) == name
            ]
            raise CaseError(
                f"task '{token}' has no task for modality '{modality}'; candidates: {', '.join(elsewhere)} "
                "(name one with --tasks DATASET/NAME, or pass --modality)"
            )
        return [(name, matching)]
