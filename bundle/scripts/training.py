"""Training pieces that MONAI's SupervisedTrainer/SupervisedEvaluator lack for Hermes.

The workflow itself lives in ``configs/train.json``; this module only supplies:
- ``HermesPrepareBatch``: hands (task_index, modality_index) to the network and the loss;
- ``SegmentationLogits``: drops the modality head's output so sliding-window inference can stitch the rest;
- ``PerTaskDice``: validation Dice per (dataset, task), reported one number per task plus their mean;
- run-folder logic (``resolve_run_dir``) and ``RunCheckpointer``: latest/best/final checkpoints written
  atomically, resume from ``latest.pt``, and ``export_weights`` to copy final EMA weights into the bundle.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.engines.utils import PrepareBatch
from monai.handlers import from_engine
from monai.utils import convert_to_tensor
from torch import nn

from .ema import unwrap_model as unwrap
from .io_utils import atomic_torch_save, load_weights_only

LOGGER = logging.getLogger("hermes.training")

LATEST = "latest.pt"
BEST = "best.pt"
FINAL = "final.pt"


# --------------------------------------------------------------------------------------------------------------------
# Batches and network outputs


def _plain(tensor: Any, device: str | torch.device | None, non_blocking: bool, **kwargs: Any) -> torch.Tensor:
    """Move to ``device`` as a plain tensor: MetaTensor bookkeeping on every network op costs time and is not needed."""
    return convert_to_tensor(tensor, track_meta=False).to(device=device, non_blocking=non_blocking, **kwargs)


class HermesPrepareBatch(PrepareBatch):
    """Turn a collated batch into ``(image, target, network_args, network_kwargs)``.

    MONAI's trainer and evaluator call ``network(image, *network_args)`` and ``loss(pred, target)``; Hermes needs
    each sample's task list and modality both as network inputs and as loss targets, so they appear in both.
    """

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], dict]:
        missing = [k for k in ("image", "label", "task_index", "modality_index") if k not in batchdata]
        if missing:
            raise KeyError(f"batch lacks keys {missing}; the preprocessing must produce image, label, task_index, "
                           "modality_index")
        image = _plain(batchdata["image"], device, non_blocking, **kwargs)
        label = _plain(batchdata["label"], device, non_blocking).float()
        task_index = _plain(batchdata["task_index"], device, non_blocking).long()
        modality_index = _plain(batchdata["modality_index"], device, non_blocking).long().reshape(-1)
        if task_index.ndim == 1:
            task_index = task_index.unsqueeze(0)
        return image, (label, task_index, modality_index), (task_index, modality_index), {}


class SegmentationLogits(nn.Module):
    """Expose only the segmentation logits of a Hermes network, for sliding-window inference.

    The window stitcher handles spatial outputs only (the modality logits B x M are not), and it batches
    ``sw_batch_size`` windows of one image while passing that image's task and modality lists once, so the lists of a
    single image are repeated for every window.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor) -> torch.Tensor:
        windows = image.shape[0]
        if task_index.shape[0] == 1 and windows > 1:
            task_index = task_index.expand(windows, -1)
            modality_index = modality_index.reshape(1).expand(windows)
        return self.network(image, task_index, modality_index)[0]


# --------------------------------------------------------------------------------------------------------------------
# Validation metric


def _is_rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _as_name_list(value: Any, batch_size: int) -> list[str]:
    if isinstance(value, str):
        return [value] * batch_size
    return [str(v) for v in value]


class PerTaskDice(Metric):
    """Dice of every (dataset, task) pair on the validation set, and their unweighted mean as the key metric.

    Validation samples keep their whole image and the full task list of their dataset, so each predicted channel is
    compared with the matching label channel. A channel is binarised at probability 0.5 (logit 0). Cases whose label
    channel is empty are left out of that task's mean (Dice is undefined there). The per-task values are written to
    ``engine.state.metrics`` as ``"<name>/<dataset>/<task name>"`` and per-dataset means as ``"<name>/<dataset>"``.

    Args:
        task_names: global task id -> task name, used for readable metric keys (ids are used when absent).
        dataset_key: key of the batch holding each sample's dataset name.
    """

    def __init__(self, task_names: Mapping[int, str] | None = None, dataset_key: str = "dataset",
                 device: str | torch.device = "cpu") -> None:
        self.task_names = dict(task_names or {})
        self.dataset_key = dataset_key
        self._sums: dict[tuple[str, int], list[float]] = {}
        super().__init__(output_transform=lambda output: output, device=device)

    def reset(self) -> None:
        self._sums = {}

    def update(self, output: Any) -> None:  # ignite API; the engine-aware path is iteration_completed
        raise TypeError("PerTaskDice reads the engine state; attach it to an evaluator")

    def iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        if isinstance(output, list):
            raise TypeError("PerTaskDice needs the batch-first output: set the evaluator's decollate to false")
        pred = convert_to_tensor(output["pred"], track_meta=False)
        label, task_index, _ = output["label"]
        label = convert_to_tensor(label, track_meta=False)
        datasets = _as_name_list(engine.state.batch[self.dataset_key], pred.shape[0])
        self.accumulate(pred, label, task_index, datasets)

    @torch.no_grad()
    def accumulate(self, logits: torch.Tensor, label: torch.Tensor, task_index: torch.Tensor,
                   datasets: Sequence[str]) -> None:
        """Add the Dice of every non-padding channel of every sample."""
        if logits.shape[:2] != label.shape[:2] or logits.shape[2:] != label.shape[2:]:
            raise ValueError(f"prediction shape {tuple(logits.shape)} does not match label shape {tuple(label.shape)}")
        predicted = logits.float() > 0
        truth = label > 0.5
        dims = tuple(range(2, predicted.ndim))
        intersection = (predicted & truth).sum(dims).double()
        totals = predicted.sum(dims).double() + truth.sum(dims).double()
        present = truth.sum(dims) > 0
        for b, dataset in enumerate(datasets):
            for c in range(task_index.shape[1]):
                task = int(task_index[b, c])
                if task < 0 or not bool(present[b, c]):
                    continue
                dice = float(2 * intersection[b, c] / totals[b, c])
                entry = self._sums.setdefault((dataset, task), [0.0, 0.0])
                entry[0] += dice
                entry[1] += 1

    def _gathered(self) -> dict[tuple[str, int], list[float]]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self._sums
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self._sums)
        merged: dict[tuple[str, int], list[float]] = {}
        for part in parts:
            for key, (total, count) in part.items():
                entry = merged.setdefault(key, [0.0, 0.0])
                entry[0] += total
                entry[1] += count
        return merged

    def per_task(self) -> dict[tuple[str, int], float]:
        """Mean Dice of every (dataset, task id) seen, over all ranks."""
        return {key: total / count for key, (total, count) in sorted(self._gathered().items()) if count}

    def compute(self) -> float:
        values = list(self.per_task().values())
        return float(sum(values) / len(values)) if values else float("nan")

    def completed(self, engine: Engine, name: str) -> None:
        per_task = self.per_task()
        by_dataset: dict[str, list[float]] = {}
        for (dataset, task), value in per_task.items():
            engine.state.metrics[f"{name}/{dataset}/{self.task_names.get(task, task)}"] = value
            by_dataset.setdefault(dataset, []).append(value)
        for dataset, values in by_dataset.items():
            engine.state.metrics[f"{name}/{dataset}"] = sum(values) / len(values)
        values = list(per_task.values())
        engine.state.metrics[name] = float(sum(values) / len(values)) if values else float("nan")


# --------------------------------------------------------------------------------------------------------------------
# Run folder and checkpoints


_RUN_NAME: list[str] = []


def default_run_name(resume: bool = False, runs_root: str | None = None) -> str:
    """Name of the run folder when ``--run_name`` is not given.

    A fresh run gets a timestamp (one per process, and rank 0's on every rank of a distributed run); ``resume``
    picks the newest run under ``runs_root`` that has a ``latest.pt``.
    """
    if resume:
        candidates = sorted(Path(runs_root or ".").glob(f"*/{LATEST}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise FileNotFoundError(f"--resume true: no run with a {LATEST} under {runs_root}; pass --run_name NAME")
        return candidates[-1].parent.name
    if not _RUN_NAME:
        _RUN_NAME.append(time.strftime("%Y%m%d-%H%M%S"))
    if dist.is_available() and dist.is_initialized():
        shared = list(_RUN_NAME)
        dist.broadcast_object_list(shared, src=0)
        _RUN_NAME[:] = shared
    return _RUN_NAME[0]


def resolve_run_dir(runs_root: str, run_name: str, resume: bool = False) -> str:
    """The folder ``runs_root/run_name`` of this run, created if needed.

    A fresh run refuses a folder that already holds checkpoints (nothing is overwritten); ``resume`` requires its
    ``latest.pt``.
    """
    if not run_name or os.sep in str(run_name) or str(run_name) in (".", ".."):
        raise ValueError(f"--run_name must be a plain folder name, got {run_name!r}")
    run_dir = Path(runs_root) / str(run_name)
    if resume:
        if not (run_dir / LATEST).is_file():
            raise FileNotFoundError(f"--resume true: {run_dir / LATEST} does not exist; nothing to resume")
        return str(run_dir)
    if _is_rank0():
        existing = [n for n in (LATEST, BEST, FINAL) if (run_dir / n).exists()]
        if existing:
            raise FileExistsError(f"run folder {run_dir} already holds {existing}; pass --resume true to continue it "
                                  "or choose another --run_name")
    run_dir.mkdir(parents=True, exist_ok=True)
    return str(run_dir)


def save_atomically(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: readers never see half a file."""
    atomic_torch_save(obj, path, overwrite=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint of tensors and plain values only (``weights_only=True``), with a clear error if unusable."""
    checkpoint = load_weights_only(path, map_location=map_location)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"checkpoint {path} holds a {type(checkpoint).__name__}, expected a dict")
    return checkpoint


class RunCheckpointer:
    """Write ``latest.pt`` / ``best.pt`` / ``final.pt`` into the run folder and resume from ``latest.pt``.

    The files use the published Hermes layout (``model_state_dict``, ``ema_model_state_dict``,
    ``optimizer_state_dict``, ``epoch``) plus ``iteration``, ``lr_scheduler_state_dict`` and the best metric, so a
    resumed run continues its iteration count, optimiser moments, learning-rate schedule and EMA. ``best.pt`` and
    ``final.pt`` leave the optimiser and schedule out (None). Only rank 0 writes.

    Args:
        run_dir: folder of this run.
        network: the trained network (DDP wrappers are unwrapped).
        ema: the EMA holder (anything with ``state_dict``/``load_state_dict``), or None.
        optimizer, lr_scheduler: saved and restored with the run.
        save_interval: write ``latest.pt`` every this many epochs (and always at the end).
        resume: restore ``latest.pt`` when the trainer starts.
    """

    def __init__(self, run_dir: str, network: nn.Module, optimizer: torch.optim.Optimizer, ema: Any = None,
                 lr_scheduler: Any = None, save_interval: int = 1, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.network = network
        self.ema = ema
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.save_interval = max(int(save_interval), 1)
        self.resume = bool(resume)
        self.trainer: Engine | None = None
        self.evaluator: Engine | None = None
        self._latest_written: tuple[int, float] | None = None  # (iteration, best metric) of the last latest.pt

    # wiring ---------------------------------------------------------------------------------------------------------
    def attach(self, trainer: Engine) -> None:
        self.trainer = trainer
        if self.resume:
            trainer.add_event_handler(Events.STARTED, self._restore)
        trainer.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self._save_latest)
        trainer.add_event_handler(Events.COMPLETED, self._save_final)

    def attach_best(self, evaluator: Engine) -> None:
        """Watch the evaluator's key metric and write ``best.pt`` when it improves."""
        self.evaluator = evaluator
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._save_best_if_improved)

    # content --------------------------------------------------------------------------------------------------------
    def state(self, resumable: bool = True) -> dict:
        trainer_state = self.trainer.state if self.trainer is not None else None
        evaluator_state = self.evaluator.state if self.evaluator is not None else None
        return {
            "model_state_dict": unwrap(self.network).state_dict(),
            "ema_model_state_dict": self.ema.state_dict() if self.ema is not None else None,
            "optimizer_state_dict": self.optimizer.state_dict() if resumable else None,
            "lr_scheduler_state_dict": (self.lr_scheduler.state_dict()
                                        if resumable and self.lr_scheduler is not None else None),
            "epoch": int(trainer_state.epoch) if trainer_state else 0,
            "iteration": int(trainer_state.iteration) if trainer_state else 0,
            "best_metric": float(getattr(evaluator_state, "best_metric", -1)) if evaluator_state else -1.0,
            "best_metric_epoch": int(getattr(evaluator_state, "best_metric_epoch", -1)) if evaluator_state else -1,
        }

    def save(self, name: str) -> Path | None:
        """Write one checkpoint; only ``latest.pt`` carries the optimiser and schedule (best/final are for use,
        and the optimiser moments would double their size)."""
        if not _is_rank0():
            return None
        path = self.run_dir / name
        save_atomically(self.state(resumable=name == LATEST), path)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        LOGGER.info("rank %d saved %s (epoch %s, iteration %s)", rank, path,
                    self.trainer.state.epoch if self.trainer else "-", self.trainer.state.iteration if self.trainer else "-")
        return path

    # events ---------------------------------------------------------------------------------------------------------
    def _progress(self) -> tuple[int, float]:
        """What distinguishes one latest.pt from the next: the iteration and the best metric so far."""
        iteration = int(self.trainer.state.iteration) if self.trainer is not None else 0
        best = getattr(self.evaluator.state, "best_metric", -1) if self.evaluator is not None else -1
        return iteration, float(best)

    def _save_latest(self, engine: Engine) -> None:
        self._latest_written = self._progress()
        self.save(LATEST)

    def _save_final(self, engine: Engine) -> None:
        if self._latest_written != self._progress():  # a release-size latest.pt is ~1 GB: never rewrite the same state
            self._save_latest(engine)
        self.save(FINAL)

    def _save_best_if_improved(self, evaluator: Engine) -> None:
        state = evaluator.state
        if getattr(state, "best_metric_epoch", -1) == state.epoch and not math.isnan(float(state.best_metric)):
            self.save(BEST)

    def _restore_schedule_position(self, saved: Mapping[str, Any]) -> None:
        """Continue the schedule where it stopped, but with the current config's shape.

        Only the position (``last_epoch``, ``_step_count``) is taken from the checkpoint: a resumed run may raise
        ``--max_epochs``, and the schedule's length must then follow the new value, not the saved one.
        """
        state = self.lr_scheduler.state_dict()
        for key in ("last_epoch", "_step_count"):
            if key in saved:
                state[key] = saved[key]
        self.lr_scheduler.load_state_dict(state)
        if hasattr(self.lr_scheduler, "get_lr"):
            for group, lr in zip(self.optimizer.param_groups, self.lr_scheduler.get_lr()):
                group["lr"] = lr

    def _restore(self, engine: Engine) -> None:
        path = self.run_dir / LATEST
        checkpoint = load_checkpoint(path, map_location=next(unwrap(self.network).parameters()).device)
        unwrap(self.network).load_state_dict(checkpoint["model_state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        if self.ema is not None and checkpoint.get("ema_model_state_dict") is not None:
            self.ema.load_state_dict(checkpoint["ema_model_state_dict"])
        if self.lr_scheduler is not None and checkpoint.get("lr_scheduler_state_dict") is not None:
            self._restore_schedule_position(checkpoint["lr_scheduler_state_dict"])
        epoch, iteration = int(checkpoint["epoch"]), int(checkpoint["iteration"])
        if engine.state.max_epochs is not None and epoch >= engine.state.max_epochs:
            raise ValueError(f"{path} is at epoch {epoch}, not below max_epochs {engine.state.max_epochs}; raise "
                             "--max_epochs to train further")
        engine.state.epoch, engine.state.iteration = epoch, iteration
        if self.evaluator is not None and checkpoint.get("best_metric_epoch", -1) >= 0:
            self.evaluator.state.best_metric = checkpoint["best_metric"]
            self.evaluator.state.best_metric_epoch = checkpoint["best_metric_epoch"]
        LOGGER.info("resumed %s at epoch %d, iteration %d", path, epoch, iteration)


class SaveRunCheckpoints:
    """Trainer handler: ``latest.pt`` every ``save_interval`` epochs, ``final.pt`` at the end, resume at start."""

    def __init__(self, checkpointer: RunCheckpointer) -> None:
        self.checkpointer = checkpointer

    def attach(self, engine: Engine) -> None:
        self.checkpointer.attach(engine)


class SaveBestCheckpoint:
    """Evaluator handler: ``best.pt`` whenever the key validation metric improves."""

    def __init__(self, checkpointer: RunCheckpointer) -> None:
        self.checkpointer = checkpointer

    def attach(self, engine: Engine) -> None:
        self.checkpointer.attach_best(engine)


class LossProgressBar:
    """tqdm progress bar of the training iterations showing the current loss (ignite's ``ProgressBar``)."""

    def __init__(self, persist: bool = True) -> None:
        from ignite.handlers import ProgressBar

        self.bar = ProgressBar(persist=persist)

    def attach(self, engine: Engine) -> None:
        self.bar.attach(engine, output_transform=lambda output: {"loss": float(from_engine(["loss"], first=True)(output))})


def task_names(registry: Any) -> dict[int, str]:
    """Global task id -> task name, for readable validation metric keys."""
    return {int(task.id): str(task.name) for task in registry.tasks}


def export_weights(checkpoint_path: str, destination: str, overwrite: bool = False, key: str = "ema_model_state_dict",
                   extra_registries: Any = None) -> str | None:
    """Copy the network weights (EMA by default) of a run checkpoint to ``destination`` as a plain state dict.

    The extra task registries the run trained with are merged into ``<destination stem>.tasks.json`` beside it, where
    the inference workflow finds them, so the exported weights and their task ids travel together.
    Refuses an existing ``destination`` unless ``overwrite``; writes atomically. Rank 0 only.
    """
    if not _is_rank0():
        return None
    destination_path = Path(destination)
    if destination_path.exists() and not overwrite:
        raise FileExistsError(f"{destination_path} exists; pass --overwrite true to replace it")
    checkpoint = load_checkpoint(checkpoint_path)
    weights = checkpoint.get(key) or checkpoint.get("model_state_dict")
    if not weights:
        raise ValueError(f"{checkpoint_path} holds no '{key}' or 'model_state_dict'")
    save_atomically(dict(weights), destination_path)
    registry_path = write_registry_beside(destination_path, as_path_list(extra_registries))
    LOGGER.info("exported %s of %s to %s (tasks: %s)", key, checkpoint_path, destination_path, registry_path)
    return str(destination_path)


def write_registry_beside(weights_path: Path, extra_registries: Sequence[str]) -> Path | None:
    """Merge the extra registry files into ``<weights stem>.tasks.json`` (or remove a stale one when there are none)."""
    target = weights_path.with_name(weights_path.stem + ".tasks.json")
    if not extra_registries:
        target.unlink(missing_ok=True)
        return None
    merged: dict[str, Any] = {"datasets": {}, "tasks": []}
    for source in extra_registries:
        content = json.loads(Path(source).read_text())
        merged["datasets"].update(content.get("datasets", {}))
        merged["tasks"].extend(task for task in content.get("tasks", []) if task not in merged["tasks"])
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(merged, indent=1))
    os.replace(tmp, target)
    return target


def required_setting(name: str, what: str) -> Any:
    """Stand-in for a config value the user must give (``--name VALUE``): fails with a message naming it."""
    raise ValueError(f"this configuration needs --{name}: {what}")


def as_path_list(value: Any) -> list[str]:
    """Accept None, '', one path, or a list of paths (what ``--task_registry_extra`` may be given as)."""
    if value is None or value == "" or value is False:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value if v]
