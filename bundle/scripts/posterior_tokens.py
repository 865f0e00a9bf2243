"""Posterior task tokens on real cases: what the network actually uses per image, averaged per task.

The priors are where a task starts; at every fusion site its token then reads the image, and the five updated tokens
(concatenated) are what the posterior head turns into the task's prototype. ``posterior_task_tokens`` runs Hermes-R
weights over a labelled datalist (the validation preprocessing of ``configs/train.json``: orientation, spacing, the
published crop and normalisation) window by window, each case in its dataset's context (its task list plus a null),
and averages every task's concatenated posterior token over all windows of all its cases. ``scripts.analyze_priors
--datalist`` compares these averages the way it compares the priors.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import Dataset
from monai.inferers import SlidingWindowInferer
from torch import nn

from .checkpoint_names import backbone_of
from .errors import SetupError
from .networks.hermes import HermesResUNet
from .registry import NULL_TASK

TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train.json"


def network_for(weights: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The Hermes-R network these (bundle-layout) weights fill, its sizes read from the weights."""
    if backbone_of(weights) != "r":
        raise SetupError(f"{source}: --datalist supports Hermes-R weights (these are Hermes-M)")
    task, modality = weights["fusion.0.task_prior"], weights["fusion.0.modality_prior"]
    network = HermesResUNet(
        base_channels=task.shape[1] // 4,
        num_tasks=task.shape[0] - 1,
        num_modalities=modality.shape[0],
        modality_tokens=modality.shape[1],
    )
    network.load_state_dict(weights)
    return network.eval()


class _Collector:
    """The sliding-window callable: runs the network, keeps the posterior task tokens, returns zeros of the window."""

    def __init__(self, network: nn.Module) -> None:
        self.network, self.tokens = network, []
        for site in network.fusion:
            site.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: tuple, output: tuple) -> None:
        self.tokens.append(output[1])

    def __call__(self, windows: torch.Tensor, tasks: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        self.tokens = []
        count = windows.shape[0]
        self.network(windows, tasks.expand(count, -1), modality.expand(count), return_modality_logits=False)
        self.windows.append(torch.cat(self.tokens, dim=2)[:, : tasks.shape[1]].double().sum(0))
        self.counted += count
        return torch.zeros_like(windows)


def posterior_task_tokens(
    weights: dict[str, torch.Tensor],
    source: str,
    datalist: str | os.PathLike,
    registries: list[str],
    spacing: list[float],
    roi_size: list[int],
) -> dict[int, torch.Tensor]:
    """Task id -> its concatenated posterior token averaged over every window of the datalist's cases (its
    ``validation`` section, else ``training``; labelled, for the published crop)."""
    network = network_for(weights, source)
    parser = ConfigParser()
    parser.read_config(str(TRAIN_CONFIG))
    parser.update({"datalist": str(datalist), "task_registry_extra": registries, "spacing": spacing})
    data = parser.get_parsed_content("data")
    items = data.section("validation") or data.section("training")
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    sums: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}
    collector = _Collector(network)
    inferer = SlidingWindowInferer(roi_size, sw_batch_size=1, overlap=0.0, mode="constant")
    with torch.no_grad():
        for sample in Dataset(items, preprocessing):
            ids = torch.as_tensor(sample["task_index"]).reshape(-1).tolist()
            tasks = torch.tensor([ids + [NULL_TASK]])
            modality = torch.as_tensor(sample["modality_index"]).reshape(1)
            collector.windows, collector.counted = [], 0
            inferer(torch.as_tensor(sample["image"])[None].float(), collector, tasks, modality)
            total = torch.stack(collector.windows).sum(0)
            for position, task_id in enumerate(ids):
                sums[task_id] = sums.get(task_id, 0) + total[position]
                counts[task_id] = counts.get(task_id, 0) + collector.counted
    if not sums:
        raise SetupError(f"--datalist {datalist}: no case to run")
    return {task_id: sums[task_id] / counts[task_id] for task_id in sums}
