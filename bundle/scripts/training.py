"""Training pieces that MONAI's SupervisedTrainer/SupervisedEvaluator lack for Hermes.

The workflow itself lives in ``configs/train.json``; this module only supplies:
- ``HermesPrepareBatch``: hands (task_index, modality_index) to the network and the loss;
- ``SegmentationLogits``: drops the modality head's output so sliding-window inference can stitch the rest;
- ``PerTaskDice``: validation Dice per (dataset, task), reported one number per task plus their mean;
- run-folder logic (``resolve_run_dir``) and ``RunCheckpointer``: latest/best/final checkpoints written
  atomically, resume from ``latest.pt``, and ``export_weights`` to copy final EMA weights into the bundle.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.engines.utils import PrepareBatch
from monai.utils import convert_to_tensor
from torch import nn

LOGGER = logging.getLogger("hermes.training")

LATEST = "latest.pt"
BEST = "best.pt"
FINAL = "final.pt"


# --------------------------------------------------------------------------------------------------------------------
# Batches and network outputs


def _plain(tensor: Any, device: str | torch.device | None, non_blocking: bool, **kwargs: Any) -> torch.Tensor:
    """Move to ``device`` as a plain tensor (the losses and priors need no MetaTensor bookkeeping)."""
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
        image = batchdata["image"].to(device=device, non_blocking=non_blocking, **kwargs)
        label = _plain(batchdata["label"], device, non_blocking).float()
        task_index = _plain(batchdata["task_index"], device, non_blocking).long()
        modality_index = _plain(batchdata["modality_index"], device, non_blocking).long().reshape(-1)
        if task_index.ndim == 1:
            task_index = task_index.unsqueeze(0)
        return image, (label, task_index, modality_index), (task_index, modality_index), {}


class SegmentationLogits(nn.Module):
    """Expose only the segmentation logits of a Hermes network.

    Sliding-window inference stitches spatial outputs; the modality logits (B x M) are not spatial.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor) -> torch.Tensor:
        return self.network(image, task_index, modality_index)[0]


def unwrap(network: nn.Module) -> nn.Module:
    """The plain network inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif hasattr(network, "_orig_mod"):
            network = network._orig_mod
        else:
            return network


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


def default_run_name() -> str:
    """A timestamp name, identical on every rank of a distributed run (rank 0's clock decides)."""
    name = [time.strftime("%Y%m%d-%H%M%S")]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(name, src=0)
    return name[0]


def resolve_run_dir(runs_root: str, run_name: str | None, resume: bool = False) -> str:
    """The folder of this run, created if needed.

    - ``resume`` false: a fresh run; refuses a folder that already holds checkpoints (nothing is overwritten).
    - ``resume`` true: ``run_name`` names the run to continue; left empty, the newest run with a ``latest.pt``.
    """
    root = Path(runs_root)
    if resume and not run_name:
        candidates = sorted((p for p in root.glob(f"*/{LATEST}")), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise FileNotFoundError(f"--resume true: no run with a {LATEST} under {root}; pass --run_name NAME")
        return str(candidates[-1].parent)
    if not run_name:
        run_name = default_run_name()
    run_dir = root / str(run_name)
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint of tensors and plain values only (``weights_only=True``), with a clear error if unusable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise ValueError(f"checkpoint {path} cannot be read safely ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"checkpoint {path} holds a {type(checkpoint).__name__}, expected a dict")
    return checkpoint


class RunCheckpointer:
    """Write ``latest.pt`` / ``best.pt`` / ``final.pt`` into the run folder and resume from ``latest.pt``.

    The files use the published Hermes layout (``model_state_dict``, ``ema_model_state_dict``,
    ``optimizer_state_dict``, ``epoch``) plus ``iteration``, ``lr_scheduler_state_dict`` and the best metric, so a
    resumed run continues its iteration count, optimiser moments, learning-rate schedule and EMA. Only rank 0 writes.

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
    def state(self) -> dict:
        trainer_state = self.trainer.state if self.trainer is not None else None
        evaluator_state = self.evaluator.state if self.evaluator is not None else None
        ema_state = self.ema.state_dict() if self.ema is not None else None
        return {
            "model_state_dict": unwrap(self.network).state_dict(),
            "ema_model_state_dict": _ema_network_state(ema_state),
            "ema_state_dict": ema_state,
            "optimizer_state_dict": self.optimizer.state_dict(),
            "lr_scheduler_state_dict": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "epoch": int(trainer_state.epoch) if trainer_state else 0,
            "iteration": int(trainer_state.iteration) if trainer_state else 0,
            "best_metric": float(getattr(evaluator_state, "best_metric", -1)) if evaluator_state else -1.0,
            "best_metric_epoch": int(getattr(evaluator_state, "best_metric_epoch", -1)) if evaluator_state else -1,
        }

    def save(self, name: str) -> Path | None:
        if not _is_rank0():
            return None
        path = self.run_dir / name
        save_atomically(self.state(), path)
        LOGGER.info("saved %s (epoch %s, iteration %s)", path, self.trainer.state.epoch if self.trainer else "-",
                    self.trainer.state.iteration if self.trainer else "-")
        return path

    # events ---------------------------------------------------------------------------------------------------------
    def _save_latest(self, engine: Engine) -> None:
        self.save(LATEST)

    def _save_final(self, engine: Engine) -> None:
        self.save(LATEST)
        self.save(FINAL)

    def _save_best_if_improved(self, evaluator: Engine) -> None:
        state = evaluator.state
        if getattr(state, "best_metric_epoch", -1) == state.epoch and not math.isnan(float(state.best_metric)):
            self.save(BEST)

    def _restore(self, engine: Engine) -> None:
        path = self.run_dir / LATEST
        checkpoint = load_checkpoint(path, map_location=next(unwrap(self.network).parameters()).device)
        unwrap(self.network).load_state_dict(checkpoint["model_state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
        if self.ema is not None and checkpoint.get("ema_state_dict") is not None:
            self.ema.load_state_dict(checkpoint["ema_state_dict"])
        if self.lr_scheduler is not None and checkpoint.get("lr_scheduler_state_dict") is not None:
            self.lr_scheduler.load_state_dict(checkpoint["lr_scheduler_state_dict"])
        epoch, iteration = int(checkpoint["epoch"]), int(checkpoint["iteration"])
        if engine.state.max_epochs is not None and epoch >= engine.state.max_epochs:
            raise ValueError(f"{path} is at epoch {epoch}, not below max_epochs {engine.state.max_epochs}; raise "
                             "--max_epochs to train further")
        engine.state.epoch, engine.state.iteration = epoch, iteration
        if self.evaluator is not None and checkpoint.get("best_metric_epoch", -1) >= 0:
            self.evaluator.state.best_metric = checkpoint["best_metric"]
            self.evaluator.state.best_metric_epoch = checkpoint["best_metric_epoch"]
        LOGGER.info("resumed %s at epoch %d, iteration %d", path, epoch, iteration)


def _ema_network_state(ema_state: Any) -> dict | None:
    """The averaged network weights inside an EMA state dict (the published ``ema_model_state_dict``)."""
    if ema_state is None:
        return None
    for key in ("module", "model", "ema_model", "state_dict"):
        if isinstance(ema_state, Mapping) and isinstance(ema_state.get(key), Mapping):
            return dict(ema_state[key])
    return dict(ema_state)


def export_weights(checkpoint_path: str, destination: str, overwrite: bool = False, key: str = "ema_model_state_dict"
                   ) -> str | None:
    """Copy the network weights (EMA by default) of a run checkpoint to ``destination`` as a plain state dict.

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
    LOGGER.info("exported %s of %s to %s", key, checkpoint_path, destination_path)
    return str(destination_path)


def as_path_list(value: Any) -> list[str]:
    """Accept None, '', one path, or a list of paths (what ``--task_registry_extra`` may be given as)."""
    if value is None or value == "" or value is False:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value if v]
