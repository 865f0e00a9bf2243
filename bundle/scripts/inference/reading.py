"""What inference and evaluation share for one case: read it as the network needs it (on the network's grid, its
modality decided, intensities normalised), load the weights once, and predict it in task contexts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import CaseError, error_chain, one_line
from ..predict import TaskContext, sliding_window_probabilities
from ..weights import LoadedWeights, load_weights
from .modality import ModalityStep


class CaseReader:
    """``preprocessing`` (MONAI load/check/orientation/spacing), then the modality step, then normalisation."""

    def __init__(
        self, preprocessing: Callable[[dict], dict], modality: ModalityStep, normalize: Callable[[dict], dict]
    ) -> None:
        self.preprocessing = preprocessing
        self.modality = modality
        self.normalize = normalize

    def __call__(self, case: dict[str, Any]) -> dict[str, Any]:
        source = case.get("source", case.get("image"))
        try:
            data = self.preprocessing(dict(case))
        except Exception as err:  # MONAI wraps a failing transform's error; ours are kept as they are
            if any(isinstance(e, CaseError) for e in error_chain(err)):
                raise CaseError(one_line(err)) from err
            raise CaseError(f"{source}: cannot read or preprocess the image ({one_line(err)})") from err
        name, how = self.modality(data)
        data["modality_name"], data["modality_source"] = name, how
        data["modality_index"] = torch.tensor(self.modality.registry.modality_index(name), dtype=torch.long)
        return self.normalize(data)


class CasePrediction:
    """The weights, the reader and the sliding-window prediction of a case, as both workflows use them.

    Args:
        reader: the case as the network needs it.
        network: the Hermes network; ``load()`` puts the weights of ``ckpt_path`` into it before the first case.
        predictor: the window adapter around ``network`` (``scripts.predict.WindowPredictor``).
        inferer: MONAI sliding-window inferer.
    """

    def __init__(
        self,
        reader: CaseReader,
        network: nn.Module,
        predictor: nn.Module,
        inferer: Callable[..., torch.Tensor],
        ckpt_path: str,
        device: torch.device | str = "cpu",
    ) -> None:
        self.reader = reader
        self.network = network
        self.predictor = predictor
        self.inferer = inferer
        self.ckpt_path = ckpt_path
        self.device = torch.device(device)
        self.weights: LoadedWeights | None = None

    def load(self) -> LoadedWeights:
        """Check the modality choice, load the weights (any accepted kind), switch to evaluation mode."""
        self.reader.modality.check()
        self.weights = load_weights(self.network, self.ckpt_path)
        self.network.eval()
        return self.weights

    def describe(self) -> str:
        assert self.weights is not None
        return f"on {self.device} with weights {self.weights.path} ({self.weights.kind})"

    def read(self, case: dict[str, Any]) -> dict[str, Any]:
        return self.reader(case)

    def probabilities(self, data: dict[str, Any], contexts: Sequence[TaskContext]) -> torch.Tensor:
        """Per-task probabilities on the network's grid, one channel per task of each context in order."""
        return sliding_window_probabilities(
            data["image"], contexts, data["modality_index"], self.inferer, self.predictor, self.device
        )
