"""EMA of the weights: the published rate schedule, buffer copies, the ignite handler, checkpoints with the network's keys."""

from __future__ import annotations

import torch
import torch.nn as nn
from ignite.engine import Engine

from scripts.ema import EMAUpdateHandler, ModelEMA, unwrap_model
from scripts.io_utils import atomic_torch_save, load_weights_only


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.BatchNorm3d(2), nn.ReLU(), nn.Conv3d(2, 1, 1))


def _perturb(model: nn.Module, amount: float) -> None:
    with torch.no_grad():
        for param in model.parameters():
            param.add_(amount)


def test_update_follows_the_published_rate() -> None:
    model = _net()
    ema = ModelEMA(model, decay=0.99)
    assert ema.module is not model and not any(p.requires_grad for p in ema.module.parameters())
    assert [ema.rate(s) for s in (0, 1, 3, 99, 500)] == [0.0, 0.5, 0.75, 0.99, 0.99]
    expected = [p.detach().clone() for p in ema.module.parameters()]
    for step, amount in enumerate((0.5, -0.2, 0.3)):
        _perturb(model, amount)
        model.train()(torch.randn(2, 1, 4, 4, 4))  # moves the BatchNorm running statistics
        ema.update(model, step=step)
        alpha = min(1 - 1 / (step + 1), 0.99)
        expected = [alpha * e + (1 - alpha) * p.detach() for e, p in zip(expected, model.parameters())]
    for ema_param, value in zip(ema.module.parameters(), expected):
        assert torch.allclose(ema_param, value, atol=1e-6)
    # step 0 copied the weights; later steps blend them, so the average differs from the model now
    assert not torch.allclose(next(ema.module.parameters()), next(model.parameters()))
    # buffers (BatchNorm statistics) are copied, not averaged
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)
    assert int(ema.module[1].num_batches_tracked) == 3


def test_handler_updates_after_each_iteration_and_network_is_usable() -> None:
    model = _net()
    ema = ModelEMA(model, decay=0.9)
    reference = ModelEMA(model, decay=0.9)

    def train_step(engine, batch):
        _perturb(model, 0.1)

    engine = Engine(train_step)
    engine.network = model
    EMAUpdateHandler(ema).attach(engine)
    engine.run(range(5), max_epochs=2)
    for step in range(10):  # the handler passed steps 0..9
        model_copy = _net()
        with torch.no_grad():
            for p, base in zip(model_copy.parameters(), _net().parameters()):
                p.copy_(base + 0.1 * (step + 1))
        reference.update(model_copy, step=step)
    for got, want in zip(ema.module.parameters(), reference.module.parameters()):
        assert torch.allclose(got, want, atol=1e-5)
    assert ema.num_updates == 10
    image = torch.randn(1, 1, 4, 4, 4)
    ema.module.eval()
    assert ema(image).shape == (1, 1, 4, 4, 4)
    assert torch.equal(ema(image), ema.module(image))


def test_ema_checkpoint_has_the_network_keys(tmp_path) -> None:
    model = _net()
    ema = ModelEMA(nn.DataParallel(model))  # wrappers are unwrapped: keys stay the plain network's
    assert unwrap_model(nn.DataParallel(model)) is model
    _perturb(model, 1.0)
    ema.update(model, step=5)
    assert list(ema.state_dict()) == list(model.state_dict())
    path = atomic_torch_save({"model_state_dict": model.state_dict(), "ema_model_state_dict": ema.state_dict()},
                             tmp_path / "checkpoint.pt")
    loaded = load_weights_only(path)
    fresh = ModelEMA(_net())
    fresh.load_state_dict(loaded["ema_model_state_dict"])
    for got, want in zip(fresh.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(got, want)
