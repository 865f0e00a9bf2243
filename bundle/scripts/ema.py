"""Exponential moving average of the network weights, the model Hermes evaluates and releases.

As in the published training, the average is updated after every optimiser step with the rate
``alpha = min(1 - 1 / (step + 1), decay)`` (step counted from 0, so the first update copies the weights and the
average warms up over the first ~100 steps), parameters are averaged and buffers are copied as they are.
``ModelEMA.module`` is an ordinary ``nn.Module`` (give it to the evaluator as its network), and ``ModelEMA`` saves
and loads like one (``state_dict``/``load_state_dict`` use the network's own key names, e.g. for
``CheckpointSaver(save_dict={"ema_model": ...})`` and the published ``ema_model_state_dict``). Create it after the
network is on its device: the average is a copy living where the network was.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain network inside DistributedDataParallel/DataParallel and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class ModelEMA:
    """A frozen copy of a network that tracks the exponential moving average of its weights."""

    def __init__(self, model: nn.Module, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.num_updates = 0

    def rate(self, step: int) -> float:
        """Weight of the old average at 0-based ``step``: min(1 - 1 / (step + 1), decay)."""
        return min(1.0 - 1.0 / (step + 1), self.decay)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """Blend ``model``'s parameters into the average and copy its buffers (``step``: default the update count)."""
        alpha = self.rate(self.num_updates if step is None else int(step))
        source = unwrap_model(model)
        ema_params = list(self.module.parameters())
        params = list(source.parameters())
        if len(ema_params) != len(params):
            raise ValueError(f"the EMA network has {len(ema_params)} parameters, the model {len(params)}")
        for ema_param, param in zip(ema_params, params):
            ema_param.mul_(alpha).add_(param.detach().to(ema_param.dtype), alpha=1.0 - alpha)
        for ema_buffer, buffer in zip(self.module.buffers(), source.buffers()):
            ema_buffer.copy_(buffer)
        self.num_updates += 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        return self.module.load_state_dict(state_dict, strict=strict)

    def to(self, *args: Any, **kwargs: Any) -> ModelEMA:
        self.module.to(*args, **kwargs)
        return self


class EMAUpdateHandler:
    """Ignite handler updating a ``ModelEMA`` after every training iteration (``Events.ITERATION_COMPLETED``).

    The step passed to the EMA is ``engine.state.iteration - 1``, so a resumed run (whose engine state is restored
    from the checkpoint) continues the same rate schedule. ``model`` defaults to the engine's ``network``.
    """

    def __init__(self, ema: ModelEMA, model: nn.Module | None = None, every_n_iterations: int = 1) -> None:
        if every_n_iterations < 1:
            raise ValueError(f"every_n_iterations must be >= 1, got {every_n_iterations}")
        self.ema = ema
        self.model = model
        self.every_n_iterations = int(every_n_iterations)

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self)

    def __call__(self, engine: Any) -> None:
        model = self.model if self.model is not None else getattr(engine, "network", None)
        if model is None:
            raise AttributeError("EMAUpdateHandler needs a model: give one or attach it to an engine with a network")
        self.ema.update(model, step=engine.state.iteration - 1)
