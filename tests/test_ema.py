"""EMA of the weights on ignite's EMAHandler: the published rate every iteration, buffer copies, a resumed run
continuing the rate, and the averaged copy the checkpoints and validation use."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from scripts.training.ema import HermesEMAHandler, average_of, published_alpha, unwrap_model


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.BatchNorm3d(2), nn.ReLU(), nn.Conv3d(2, 1, 1))


def _trainer(model: nn.Module) -> Engine:
    """An engine whose every iteration moves the weights (a fixed step per iteration) and the BatchNorm statistics."""

    def step(engine: Engine, batch: int) -> None:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.1 * ((engine.state.iteration % 3) - 1) + 0.05)
        model.train()(torch.randn(2, 1, 4, 4, 4))

    return Engine(step)


def _expected_average(decay: float, iterations: int) -> list[torch.Tensor]:
    """The published update replayed by hand: alpha = min(1 - 1/(step + 1), decay), step from 0."""
    model = _net()
    average = [p.detach().clone() for p in model.parameters()]
    engine = _trainer(model)

    @engine.on(Events.ITERATION_COMPLETED)
    def blend(e: Engine) -> None:
        alpha = published_alpha(e.state.iteration - 1, decay)
        for i, param in enumerate(model.parameters()):
            average[i] = alpha * average[i] + (1 - alpha) * param.detach()

    engine.run(range(iterations), max_epochs=1)
    return average


def test_published_rate_every_iteration_and_buffers_copied() -> None:
    assert [published_alpha(s, 0.99) for s in (0, 1, 3, 99, 500)] == [0.0, 0.5, 0.75, 0.99, 0.99]
    model = _net()
    engine = _trainer(model)
    handler = HermesEMAHandler(model, decay=0.9)
    ema_model = average_of(handler)
    handler.attach(engine)
    momenta: list[float] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: momenta.append(e.state.ema_momentum))
    engine.run(range(30), max_epochs=1)
    assert momenta == pytest.approx([1 - published_alpha(s, 0.9) for s in range(30)])
    assert momenta[0] == 1.0 and momenta[-1] == pytest.approx(0.1)  # the first update copies, later ones blend
    for got, want in zip(ema_model.parameters(), _expected_average(0.9, 30)):
        assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(next(ema_model.parameters()), next(model.parameters()))
    assert torch.equal(ema_model[1].running_mean, model[1].running_mean)  # buffers copied, not averaged
    assert int(ema_model[1].num_batches_tracked) == 30
    assert handler.ema_model is ema_model and not ema_model.training


def test_a_resumed_run_continues_the_rate() -> None:
    """The rate follows the trainer's iteration: after a restart at iteration 4 it does not copy the weights again."""
    model = _net()
    first_handler = HermesEMAHandler(model, decay=0.9)
    ema_model = average_of(first_handler)
    first = _trainer(model)
    first_handler.attach(first)
    first.run(range(4), max_epochs=1)
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in (ema_model, model)]

    model2 = _net()
    model2.load_state_dict(saved[1])
    second_handler = HermesEMAHandler(model2, decay=0.9)
    ema2 = average_of(second_handler)
    ema2.load_state_dict(saved[0])
    second = _trainer(model2)
    second_handler.attach(second)
    second.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "iteration", 4))  # what resume restores
    second.run(range(4), max_epochs=2)  # epoch 2: iterations 5..8
    assert second.state.iteration == 8
    for got, want in zip(ema2.parameters(), _expected_average(0.9, 8)):
        assert torch.allclose(got, want, atol=1e-6)


def test_the_average_and_checkpoint_keys() -> None:
    model = _net()
    wrapped = nn.DataParallel(model)
    assert unwrap_model(wrapped) is model
    average = average_of(HermesEMAHandler(wrapped))  # wrappers are unwrapped: keys stay the plain network's
    assert average is not model and list(average.state_dict()) == list(model.state_dict())
    assert not any(p.requires_grad for p in average.parameters()) and not average.training
    assert all(torch.equal(a, b) for a, b in zip(average.parameters(), model.parameters()))
    with pytest.raises(ValueError, match="decay must be in"):
        HermesEMAHandler(model, decay=1.0)
