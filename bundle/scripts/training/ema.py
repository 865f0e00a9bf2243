"""Exponential moving average of the weights, the model Hermes validates and releases, on ignite's ``EMAHandler``.

The published rate: after every optimiser step the average keeps the weight ``alpha = min(1 - 1 / (step + 1), decay)``
of its old value (step counted from 0, so the first update copies the weights and the average warms up over about
``1 / (1 - decay)`` steps); parameters are averaged, buffers copied. ignite's momentum is ``1 - alpha``. The step is
the trainer's iteration count, so a resumed run (whose iteration is restored) continues the same rate; ignite's own
warm-up scheduler would restart from its first step.
"""

from __future__ import annotations

from ignite.engine import CallableEventWithFilter, Engine, Events
from ignite.handlers import EMAHandler
from torch import nn

#: Engine state attribute holding the current momentum (ignite's default name).
MOMENTUM_NAME = "ema_momentum"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain network inside DistributedDataParallel/DataParallel and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def published_alpha(step: int, decay: float) -> float:
    """Weight of the old average at 0-based ``step``: min(1 - 1 / (step + 1), decay)."""
    return min(1.0 - 1.0 / (step + 1), decay)


class HermesEMAHandler(EMAHandler):
    """ignite's ``EMAHandler`` averaging ``model`` into ``ema_model`` at the published rate, every iteration.

    Args:
        model: the trained network (DDP and ``torch.compile`` wrappers are unwrapped).
        decay: the largest weight of the old average (0.99 in the release).

    The average is ignite's own ``ema_model`` (a copy of the plain network, no gradients, eval mode): validation and
    the checkpoints read it through :func:`average_of`.
    """

    def __init__(self, model: nn.Module, decay: float = 0.99) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(unwrap_model(model), momentum=1.0 - decay, handle_buffers="copy")
        self.decay = float(decay)

    def momentum_at(self, iteration: int) -> float:
        """ignite momentum after the trainer's ``iteration``-th step (1-based): 1 - alpha(iteration - 1)."""
        return 1.0 - published_alpha(int(iteration) - 1, self.decay)

    def _set_momentum(self, engine: Engine, name: str) -> None:
        setattr(engine.state, name, self.momentum_at(engine.state.iteration))

    def attach(
        self,
        engine: Engine,
        name: str = MOMENTUM_NAME,
        warn_if_exists: bool = False,
        event: str | Events | CallableEventWithFilter = Events.ITERATION_COMPLETED,
    ) -> None:
        """Set the momentum for the engine's iteration, then let ignite update the average (same event, in order)."""
        engine.add_event_handler(event, self._set_momentum, name)
        super().attach(engine, name=name, warn_if_exists=warn_if_exists, event=event)


def average_of(handler: EMAHandler) -> nn.Module:
    """The averaged network an EMA handler keeps (a config id of its own, so validation and the checkpoints name
    it without reaching into the handler; train.json's first trainer handler is the EMA handler)."""
    if not isinstance(handler, EMAHandler):
        raise TypeError(f"ema_model must name the EMA handler, got {type(handler).__name__}")
    return handler.ema_model
