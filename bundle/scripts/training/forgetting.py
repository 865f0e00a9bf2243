"""Forgetting as a number: old tasks' validation Dice before the first step of a fine-tuning run and after its last.

``--old_datalist OLD.json`` (a datalist of labelled cases of tasks the starting weights already had; its
``validation`` section is used) makes every ``--finetune true`` run (the transfer regime of ``configs/train.json`` and
the incremental regime of ``configs/incremental.json``) score those cases twice, the way validation scores (sliding
window, each case in its dataset's context, Dice per (dataset, task) on cases holding the structure): with the
starting weights before the first step, and with the EMA weights (the ones released) after the last. The run folder
gets ``forgetting.json`` (per old task: before, after, difference = after − before) and the log one line with the mean.
Without ``--old_datalist`` the run says that forgetting was not measured.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.data import Dataset
from monai.engines import SupervisedEvaluator
from torch import nn

from ..data.collate import TaskBatchLoader
from ..data.datalist import read_datalist
from ..errors import SetupError
from ..io.files import write_json
from ..predict import WindowPredictor
from ..registry import TaskRegistry
from ..weights import held_rows, load_weights
from .dice_metric import PerTaskDice
from .ema import unwrap_model

logger = logging.getLogger(__name__)

#: The file a measured run writes into its run folder.
FORGETTING_FILE = "forgetting.json"
#: The section of the old datalist that is scored.
OLD_SECTION = "validation"


def read_old_datalist(path: str | os.PathLike, registry: TaskRegistry, weights_path: str) -> list[dict[str, Any]]:
    """The old cases, checked now (before any training step): every item labelled, of a registry dataset whose tasks
    the starting weights at ``weights_path`` already had."""
    items = read_datalist(path, registry, (OLD_SECTION,), require_label=True).checked().section(OLD_SECTION)
    old_tasks = held_rows(weights_path)["task"] - 1
    for index, item in enumerate(items):
        new = [task for task in item["task_index"] if task >= old_tasks]
        if new:
            raise SetupError(
                f"--old_datalist {path}: {OLD_SECTION} item {index} (dataset '{item['dataset']}') has tasks {new} "
                f"that the starting weights {weights_path} do not have; list cases of old tasks only"
            )
    return items


class ForgettingMeter:
    """Scores the old datalist before the first step and after the last; writes ``forgetting.json`` (rank 0).

    Old cases are scored exactly as ``evaluator`` (the run's validation) scores: its transforms, sliding-window
    inferer, batch preparation, device and autocast; "after" with the network it validates (the EMA weights).

    Args:
        old_datalist: the old cases' datalist, or None/"" (then the run logs that forgetting was not measured).
        registry: the run's task registry (old tasks keep their ids in it).
        weights_path: the weights the run started from (scored "before"); None for a run that does not fine-tune,
            which measures nothing and refuses an ``old_datalist``.
        evaluator: the run's validation evaluator (a ``SupervisedEvaluator`` whose network is a ``WindowPredictor``).
        run_dir: the run folder.
    """

    def __init__(
        self,
        old_datalist: str | None,
        registry: TaskRegistry,
        weights_path: str | None,
        evaluator: SupervisedEvaluator | None,
        run_dir: str,
    ) -> None:
        self.old_datalist = str(old_datalist) if old_datalist not in (None, "", False) else None
        self.fine_tuning = weights_path is not None
        if self.old_datalist and not self.fine_tuning:
            raise SetupError(
                f"--old_datalist {self.old_datalist}: forgetting is measured from the weights a run starts from; add "
                "--finetune true (or leave out --old_datalist)"
            )
        self.registry, self.evaluator = registry, evaluator
        self.weights_path = str(weights_path) if self.fine_tuning else ""
        self.run_dir = Path(run_dir)
        self.items = read_old_datalist(self.old_datalist, registry, self.weights_path) if self.old_datalist else []
        self.before: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        if not self.fine_tuning:
            return
        engine.add_event_handler(Events.STARTED, self.measure_before)
        engine.add_event_handler(Events.COMPLETED, self.measure_after)

    @torch.no_grad()
    def score(self, model: nn.Module) -> dict[str, float]:
        """Mean Dice per ``dataset/task`` of ``model`` on the old cases (every rank scores all of them: equal rows)."""
        validation = self.evaluator
        transform = validation.data_loader.dataset.transform
        loader = TaskBatchLoader(Dataset(self.items, transform), batch_size=1)
        predictor = WindowPredictor(model.eval(), validation.network.amp, keep_null_channels=True)
        metric = PerTaskDice(self.registry)
        for batch in loader:
            image, targets, args, kwargs = validation.prepare_batch(batch, validation.state.device)
            metric(validation.inferer(image, predictor, *args, **kwargs), targets)
        metric.aggregate()
        return {f"{dataset}/{task}": value for (dataset, task), value in metric.per_pair.items()}

    def validated_model(self) -> nn.Module:
        """The network validation scores (the run's EMA network), without its predictor wrapper."""
        return unwrap_model(self.evaluator.network.network)

    def measure_before(self, engine: Engine | None = None) -> None:
        if not self.items:
            return
        start = copy.deepcopy(self.validated_model())
        load_weights(start, self.weights_path, grow_task_tables=True)
        self.before = self.score(start.to(self.evaluator.state.device))
        del start

    def measure_after(self, engine: Engine | None = None) -> dict[str, Any] | None:
        if not self.items:
            logger.info(
                "forgetting was not measured: pass --old_datalist OLD.json (labelled %s cases of the tasks the "
                "starting weights already had) to score them before and after fine-tuning",
                OLD_SECTION,
            )
            return None
        after = self.score(self.validated_model())
        tasks = {
            name: {"before": self.before[name], "after": after[name], "difference": after[name] - self.before[name]}
            for name in self.before
            if name in after
        }
        mean = {key: sum(t[key] for t in tasks.values()) / max(len(tasks), 1) for key in ("before", "after")}
        mean["difference"] = mean["after"] - mean["before"]
        report = {
            "old_datalist": str(Path(self.old_datalist).resolve()),
            "weights_before": str(Path(self.weights_path).expanduser().resolve()),
            "weights_after": "the run's EMA weights after the last step",
            "metric": "validation Dice per (dataset, task), cases holding the structure; difference = after - before",
            "cases": len(self.items),
            "tasks": tasks,
            "mean": mean,
        }
        if idist.get_rank() == 0:
            write_json(report, self.run_dir / FORGETTING_FILE)
        logger.info(
            "forgetting: mean old-task Dice %.4f before, %.4f after, difference %+.4f over %d old tasks (%s)",
            mean["before"],
            mean["after"],
            mean["difference"],
            len(tasks),
            self.run_dir / FORGETTING_FILE,
        )
        return report
