"""Incremental learning (``configs/incremental.json``): new tasks and modalities train, every old output stays as it was.

A fine-tuned network (``--finetune true``) starts from weights whose tables grew for the datalist's new tasks and
modalities (``scripts.networks.rows``). Here everything the weights already had is frozen *by construction*:

- every parameter except the new rows becomes a buffer (same name, same value): it is no parameter, so the optimiser,
  its weight decay and gradient clipping never see it, and the EMA (ignite's ``EMAHandler``, buffers copied) copies
  it instead of averaging it;
- a table with new rows (task priors at every fusion site; modality priors and the modality head's last layer for a
  new modality) is split by ``torch.nn.utils.parametrize``: old rows and the last row (null task / unknown MRI) are
  frozen buffers of :class:`FrozenOldRows`, only the rows in between are a parameter, and the table the network reads
  is their concatenation;
- norm layers that keep running statistics are held in eval mode (Hermes-R and Hermes-M have none: InstanceNorm
  without running statistics and LayerNorm, whose weights are frozen like any other);
- the state dict keeps the bundle's layout (names, shapes and order of a plain network of the grown size), so
  checkpoints, export and inference see an ordinary Hermes network.

Old tasks' outputs in their own dataset context (the dataset's task list plus a null token) therefore cannot change;
:class:`OldTaskCheck` still compares them on a fixed window before and after the run and stops the run if they moved.
``incremental_train_shared`` names modules that train as well (the second mode, e.g. ``["task_head"]``): old outputs
may then change, so the check reports the change instead of failing and forgetting is measured with ``--old_datalist``.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.nn.utils import parametrize

from ..errors import HermesError, SetupError
from ..networks.rows import TASK, row_tensors
from ..registry import NULL_TASK, TaskRegistry
from ..weights import held_rows, start_from
from .ema import unwrap_model

logger = logging.getLogger(__name__)

#: Seed of the fixed random window the old-task check runs on.
CHECK_SEED = 20240617


class IncrementalCheckError(HermesError):
    """Old tasks' outputs changed during an incremental run that promised they could not."""


class FrozenOldRows(nn.Module):
    """Parametrization of a row table: ``cat(frozen first rows, trainable new rows, frozen last rows)``.

    The parametrized tensor's ``original`` parameter holds only the new rows; the frozen rows are buffers here (not in
    the state dict: the layout hook of :func:`freeze_all_but_new_rows` writes the whole table under its own name).
    """

    def __init__(self, table: torch.Tensor, head: int, tail: int) -> None:
        super().__init__()
        self.head_rows, self.tail_rows = int(head), int(tail)
        self.register_buffer("head", table[:head].detach().clone(), persistent=False)
        self.register_buffer("tail", table[table.shape[0] - tail :].detach().clone(), persistent=False)

    def forward(self, new_rows: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.head, new_rows, self.tail])

    def right_inverse(self, table: torch.Tensor) -> torch.Tensor:
        return table[self.head_rows : table.shape[0] - self.tail_rows]

    def frozen_rows_match(self, table: torch.Tensor) -> bool:
        rows = table.shape[0]
        return torch.equal(table[: self.head_rows].to(self.head), self.head) and torch.equal(
            table[rows - self.tail_rows :].to(self.tail), self.tail
        )


class _BundleLayout:
    """State-dict hooks: the split tables appear under their own names and every key in the plain network's order."""

    def __init__(self, order: list[str], split: list[str]) -> None:
        self.order, self.split = order, split

    @staticmethod
    def _parts(name: str) -> tuple[str, str]:
        module, _, attribute = name.rpartition(".")
        return module, attribute

    def _original_key(self, prefix: str, name: str) -> str:
        module, attribute = self._parts(name)
        return f"{prefix}{module + '.' if module else ''}parametrizations.{attribute}.original"

    def save(self, module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        for name in self.split:
            owner_name, attribute = self._parts(name)
            state_dict.pop(self._original_key(prefix, name), None)
            state_dict[prefix + name] = getattr(module.get_submodule(owner_name), attribute).detach()
        ours = {key: state_dict.pop(key) for key in [k for k in state_dict if k.startswith(prefix)]}
        for name in self.order:
            if prefix + name in ours:
                state_dict[prefix + name] = ours.pop(prefix + name)
        state_dict.update(ours)

    def load(self, module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        error_msgs = args[-1]
        for name in self.split:
            if prefix + name not in state_dict:
                continue
            owner_name, attribute = self._parts(name)
            rows: FrozenOldRows = module.get_submodule(owner_name).parametrizations[attribute][0]
            table = state_dict.pop(prefix + name)
            if not rows.frozen_rows_match(table):
                error_msgs.append(f"{name}: the old rows of the loaded table differ from the frozen rows")
            state_dict[self._original_key(prefix, name)] = rows.right_inverse(table)


def _as_buffer(module: nn.Module, attribute: str) -> None:
    """The parameter ``attribute`` of ``module`` as a buffer of the same name and value (in the state dict as before)."""
    value = getattr(module, attribute).detach().clone()
    delattr(module, attribute)
    module.register_buffer(attribute, value)


def _device(model: nn.Module) -> torch.device:
    return next(itertools.chain(model.parameters(), model.buffers())).device


def _eval_mode(module: nn.Module, args: Any) -> None:
    module.train(False)


def hold_running_statistics(network: nn.Module) -> int:
    """Keep every norm layer that tracks running statistics in eval mode (its statistics frozen); how many there are."""
    held = 0
    for module in network.modules():
        if getattr(module, "track_running_stats", False) and getattr(module, "running_mean", None) is not None:
            module.register_forward_pre_hook(_eval_mode)
            held += 1
    return held


def freeze_all_but_new_rows(
    network: nn.Module, held: dict[str, int], train_shared: Sequence[str] = ()
) -> dict[str, int]:
    """Freeze ``network`` (grown from weights with ``held`` rows per kind) except its new rows and the modules named in
    ``train_shared`` (name prefixes); return how many tensor values train, per kind (``task``, ``modality``,
    ``shared``)."""
    order = list(network.state_dict())
    shared = tuple(str(prefix) for prefix in train_shared)
    split: list[str] = []
    trainable = {"task": 0, "modality": 0, "shared": 0}
    rows = {full: (module, attribute, kind) for module, attribute, full, kind in row_tensors(network)}
    for module_name, module in list(network.named_modules()):
        for attribute, value in list(module.named_parameters(recurse=False)):
            full = f"{module_name}.{attribute}" if module_name else attribute
            if any(full == p or full.startswith(p + ".") for p in shared):
                trainable["shared"] += value.numel()
            elif full in rows and value.shape[0] > held.get(rows[full][2], value.shape[0]):
                old = held[rows[full][2]]
                trainable[rows[full][2]] += value[old - 1 : -1].numel()
                parametrize.register_parametrization(module, attribute, FrozenOldRows(value, old - 1, 1), unsafe=True)
                split.append(full)
            else:
                _as_buffer(module, attribute)
    layout = _BundleLayout(order, split)
    network.register_state_dict_post_hook(functools.partial(_BundleLayout.save, layout))  # hooks take attributes
    network.register_load_state_dict_pre_hook(functools.partial(_BundleLayout.load, layout))
    held_norms = hold_running_statistics(network)
    logger.info(
        "incremental: %d new task-row values, %d new modality-row values and %d shared values train; everything "
        "else is frozen (%s)",
        trainable[TASK],
        trainable["modality"],
        trainable["shared"],
        (
            f"{held_norms} norm layers with running statistics held in eval mode"
            if held_norms
            else "no norm layer keeps running statistics"
        ),
    )
    return trainable


def incremental_network(
    network: nn.Module, weights_path: str, finetune: bool, train_shared: Sequence[str] = ()
) -> nn.Module:
    """``network`` holding the weights at ``weights_path`` (tables grown), frozen except what is new (and
    ``train_shared``). Loads the weights on a resumed run too: the frozen rows are theirs, and the run's checkpoint must
    match them."""
    if not finetune:
        raise SetupError("configs/incremental.json continues from trained weights: run it with --finetune true")
    start_from(network, weights_path)
    held = held_rows(weights_path)
    trainable = freeze_all_but_new_rows(network, held, train_shared or ())
    if not any(trainable.values()):
        raise SetupError(
            f"{weights_path}: the datalist adds no task or modality to these weights, so the incremental regime has "
            "nothing to train; fine-tune every parameter with configs/train.json --finetune true instead"
        )
    return network


class OldTaskCheck:
    """Old tasks' logits on a fixed window, before the run and after it, for the trained network and its EMA.

    Contexts: every registry dataset whose tasks and modality the starting weights already had (its task list plus a
    null token). ``expect_identical``: bit-identical on CPU (equal within 1e-5 relative on CUDA, whose convolution
    algorithms may differ between calls) or the run stops with :class:`IncrementalCheckError`; otherwise the largest
    change is logged (the shared-parameters mode).
    """

    def __init__(
        self,
        network: nn.Module,
        ema_model: nn.Module,
        registry: TaskRegistry,
        weights_path: str,
        roi_size: Sequence[int],
        expect_identical: bool = True,
    ) -> None:
        self.network, self.ema_model, self.expect_identical = network, ema_model, bool(expect_identical)
        held = held_rows(weights_path)
        old_tasks, old_modalities = held["task"] - 1, held["modality"]
        self.datasets, tokens, modalities = [], [], []
        for dataset in registry.datasets:
            ids = registry.task_ids(dataset)
            modality = registry.modality_index(registry.dataset_modalities(dataset)[0])
            if all(i < old_tasks for i in ids) and (modality == -1 or modality < old_modalities - 1):
                self.datasets.append(dataset)
                tokens.append(ids + [NULL_TASK])
                modalities.append(modality)
        width = max((len(t) for t in tokens), default=1)
        self.tasks = torch.tensor([t + [NULL_TASK] * (width - len(t)) for t in tokens], dtype=torch.long)
        self.modalities = torch.tensor(modalities, dtype=torch.long)
        self.old_classes = list(range(old_modalities - 1)) + [-1]
        generator = torch.Generator().manual_seed(CHECK_SEED)
        self.window = torch.randn((1, 1, *[int(s) for s in roi_size]), generator=generator)
        self.reference = self.outputs(network) if self.datasets else None

    @torch.no_grad()
    def outputs(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(segmentation logits of every context, old modality classes' logits), on the CPU."""
        model = unwrap_model(model)
        device = _device(model)
        was_training = model.training
        model.eval()
        try:
            k = len(self.datasets)
            seg, modality = model(
                self.window.to(device).expand(k, -1, -1, -1, -1), self.tasks.to(device), self.modalities.to(device)
            )
        finally:
            model.train(was_training)
        return seg.float().cpu(), modality[:, self.old_classes].float().cpu()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self.check)

    def change(self, model: nn.Module) -> float:
        """Largest absolute change of the old outputs of ``model`` against the reference (0.0: bit-identical)."""
        after = self.outputs(model)
        if all(torch.equal(a, b) for a, b in zip(after, self.reference)):
            return 0.0
        return max(float((a - b).abs().max()) for a, b in zip(after, self.reference))

    def check(self, engine: Engine | None = None) -> dict[str, float]:
        if self.reference is None:
            logger.info("incremental check: no dataset of the registry has only old tasks; nothing to compare")
            return {}
        changes = {"model": self.change(self.network), "ema": self.change(self.ema_model)}
        scale = max(float(r.abs().max()) for r in self.reference)
        allowed = 0.0 if _device(self.network).type == "cpu" else 1e-5 * max(scale, 1.0)
        window = tuple(self.window.shape[2:])
        what = f"{len(self.datasets)} old dataset contexts ({', '.join(self.datasets)}) on a fixed {window} window"
        if not self.expect_identical:
            logger.info(
                "incremental check (shared parameters trained): old-task logits changed by up to %.6g (model) and "
                "%.6g (EMA) in %s; forgetting is what --old_datalist measures",
                changes["model"],
                changes["ema"],
                what,
            )
        elif max(changes.values()) > allowed:
            raise IncrementalCheckError(
                f"incremental run: old-task logits changed by up to {max(changes.values()):.6g} (model "
                f"{changes['model']:.6g}, EMA {changes['ema']:.6g}) in {what}; their rows were meant to be frozen, so "
                "do not use this run's weights"
            )
        else:
            logger.info("incremental check: old-task logits bit-identical before and after (model and EMA) in %s", what)
        return changes
