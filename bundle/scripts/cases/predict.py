"""From a ``Case`` to a ``CaseResult``: the weights (read once per run), the sliding-window probabilities in the
tasks' dataset contexts, and the way back to the input's grid, all on the compute device; only the label map and the
masks or probabilities a user asked for cross to the host.

Two ways back to the input's grid (``invert``):
- ``probabilities``: every label's probability is resampled (trilinear, MONAI ``Invertd``), then the label rule is
  applied on the input's grid: what the published evaluation of native-space results does;
- ``labels``: the label rule is applied on the network grid, and the one label map is resampled with nearest
  neighbour: one channel to resample instead of one per label (the model card gives the measured agreement).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from ..cli import probability
from ..errors import SetupError
from ..networks.base import HermesNetwork
from ..predict import TaskContext, check_sliding_window, sliding_window_probabilities
from ..weights import LoadedWeights, load_weights
from .case import Case, CaseResult
from .labels import LabelMap

INVERT_MODES = ("probabilities", "labels")


class CasePredictor:
    """The network and everything that turns a read case into its result.

    Args:
        network: the Hermes network; ``load()`` puts the weights of ``ckpt_path`` into it before the first case.
        predictor: the window adapter around ``network`` (``scripts.predict.WindowPredictor``).
        inferer: MONAI sliding-window inferer.
        invert: ``Invertd`` (trilinear) of a ``pred`` key back through the case's network-grid transforms.
        invert_nearest: the same with nearest neighbour (for label maps).
        threshold: probability above which a voxel belongs to a label.
        invert_chunk: channels brought back to the input's grid at a time.
        invert_mode: ``probabilities`` or ``labels`` (module docstring).
        cudnn_benchmark: let cuDNN time its convolution algorithms for the window shapes (CUDA only; same results
            within floating-point rounding).
    """

    def __init__(
        self,
        network: HermesNetwork,
        predictor: nn.Module,
        inferer: Callable[..., torch.Tensor],
        invert: Callable[[dict], dict],
        invert_nearest: Callable[[dict], dict],
        ckpt_path: str,
        device: torch.device | str = "cpu",
        threshold: float = 0.5,
        invert_chunk: int = 4,
        invert_mode: str = "probabilities",
        cudnn_benchmark: bool = True,
    ) -> None:
        self.network = network
        self.predictor = predictor
        self.inferer = inferer
        self.invert = invert
        self.invert_nearest = invert_nearest
        self.ckpt_path = ckpt_path
        self.device = torch.device(device)
        self.threshold = float(threshold)
        self.invert_chunk = max(1, int(invert_chunk))
        self.invert_mode = str(invert_mode)
        self.cudnn_benchmark = bool(cudnn_benchmark)
        self.weights: LoadedWeights | None = None

    def check(self) -> None:
        probability(self.threshold, "threshold")
        check_sliding_window(self.inferer, self.network.size_divisor)
        if self.invert_mode not in INVERT_MODES:
            raise SetupError(f"--invert: expected one of {', '.join(INVERT_MODES)}, got {self.invert_mode!r}")

    def load(self) -> LoadedWeights:
        """Check the settings, load the weights (any accepted kind) once, switch to evaluation mode."""
        self.check()
        self.weights = load_weights(self.network, self.ckpt_path)
        self.network.eval()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        return self.weights

    def describe(self) -> str:
        assert self.weights is not None
        return f"on {self.device} with weights {self.weights.path} ({self.weights.kind})"

    def probabilities(self, case: Case, contexts: Sequence[TaskContext]) -> torch.Tensor:
        """Per-task probabilities on the network grid (on the compute device), one channel per task of each context
        in order (``scripts.predict.channel_layout`` says which)."""
        with case.clock.stage("windows"):
            return sliding_window_probabilities(
                case.image, contexts, case.modality.index, self.inferer, self.predictor, self.device
            )

    def native_channels(self, case: Case, probs: torch.Tensor, nearest: bool = False) -> Iterator[torch.Tensor]:
        """``invert_chunk`` channels at a time of ``probs`` (network grid) on the input's grid, on the device."""
        invert = self.invert_nearest if nearest else self.invert
        for start in range(0, probs.shape[0], self.invert_chunk):
            part = MetaTensor(probs[start : start + self.invert_chunk].float())
            out = invert({"image": case.image, "pred": part})["pred"]
            yield out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)

    def result(
        self,
        case: Case,
        groups: Sequence[Any],
        merged: torch.Tensor,
        masks: bool = False,
        probabilities: bool = False,
        network_labels: bool = False,
    ) -> CaseResult:
        """The label map (and the masks / probabilities asked for) of ``merged`` (one channel per group, network
        grid) on the input's grid."""
        result = CaseResult(case=case, groups=list(groups), labels=np.zeros(0, dtype=np.uint8))
        with case.clock.stage("invert"):
            on_network = None  # the label map on the network grid: for label inversion and the overlay only
            if self.invert_mode == "labels" or network_labels:
                on_network = LabelMap(merged.shape[1:], self.threshold, len(merged), merged.device)
                on_network.add(0, merged)
            if network_labels:
                result.network_labels = on_network.numpy()
            native = LabelMap(case.native.shape, self.threshold, len(merged), merged.device)
            per_label = masks or probabilities
            if self.invert_mode == "probabilities" or per_label:
                first = 0
                for chunk in self.native_channels(case, merged):
                    if self.invert_mode == "probabilities":
                        native.add(first, chunk)
                    for offset, channel in enumerate(chunk):
                        label = first + offset + 1
                        if masks:
                            result.masks[label] = (channel > self.threshold).to(torch.uint8).cpu().numpy()
                        if probabilities:
                            result.probabilities[label] = channel.float().cpu().numpy()
                    first += len(chunk)
            if on_network is not None and self.invert_mode == "labels":
                (back,) = self.native_channels(case, on_network.labels[None].float(), nearest=True)
                native.labels.copy_(back[0].round().to(native.labels.dtype))
            result.labels = native.numpy()
        if tuple(result.labels.shape) != tuple(case.native.shape):
            raise ValueError(f"internal shape mismatch {result.labels.shape} vs input {case.native.shape}")
        return result
