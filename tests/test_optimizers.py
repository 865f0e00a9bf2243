"""LAMB against the published (apex fused LAMB) update rule, and the warm-up + poly schedule (torch LambdaLR) inside an
ignite engine, saved and resumed."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import LrScheduleHandler

from scripts.training.lamb import Lamb
from scripts.training.schedule import WarmupPolySchedule, warmup_poly_factor


def _reference_lamb(params, grads_fn, steps, lr, betas, eps, weight_decay, max_grad_norm):
    """The published update in float64 numpy: global clip, Adam moments, decoupled decay, per-tensor trust ratio."""
    params = [p.astype(np.float64).copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2 = betas
    for step in range(1, steps + 1):
        grads = grads_fn(params)
        global_norm = np.sqrt(sum((g**2).sum() for g in grads))
        divisor = global_norm / max_grad_norm if global_norm > max_grad_norm else 1.0
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g / divisor
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            update = (m[i] / (1 - beta1**step)) / (np.sqrt(v[i] / (1 - beta2**step)) + eps)
            ratio = lr
            if weight_decay != 0:
                update = update + weight_decay * p
                p_norm, u_norm = np.linalg.norm(p), np.linalg.norm(update)
                ratio = lr * p_norm / u_norm if p_norm > 0 and u_norm > 0 else lr
            params[i] = p - ratio * update
    return params


def _quadratic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3))
    y = rng.normal(size=(16, 2)) * 5
    w0 = rng.normal(size=(3, 2))
    b0 = np.zeros(2)  # zero norm: trust ratio falls back to 1

    def grads(params):
        w, b = params
        residual = x @ w + b - y
        return [2 * x.T @ residual, 2 * residual.sum(axis=0)]

    def loss(w, b):
        return ((torch.as_tensor(x, dtype=torch.float32) @ w + b - torch.as_tensor(y, dtype=torch.float32)) ** 2).sum()

    return w0, b0, grads, loss


@pytest.mark.parametrize("weight_decay", [1e-5, 0.05, 0.0])
def test_lamb_matches_the_published_update_rule(weight_decay: float) -> None:
    w0, b0, grads, loss = _quadratic()
    w = torch.tensor(w0, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float32, requires_grad=True)
    settings = dict(lr=2e-2, betas=(0.9, 0.999), eps=1e-5, weight_decay=weight_decay)
    optimizer = Lamb([w, b], max_grad_norm=1.0, **settings)
    initial_norm = None
    for _ in range(3):
        optimizer.zero_grad()
        loss(w, b).backward()
        if initial_norm is None:
            initial_norm = float(torch.sqrt(w.grad.norm() ** 2 + b.grad.norm() ** 2))
        optimizer.step()
    assert initial_norm > 10  # the global clipping is exercised
    ref_w, ref_b = _reference_lamb([w0, b0], grads, 3, max_grad_norm=1.0, **settings)
    np.testing.assert_allclose(w.detach().numpy(), ref_w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.detach().numpy(), ref_b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(ref_w, w0)


def test_lamb_state_survives_a_checkpoint() -> None:
    w0, b0, _, loss = _quadratic()

    def run(optimizer, w, b, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            loss(w, b).backward()
            optimizer.step()

    w = torch.tensor(w0, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float32, requires_grad=True)
    optimizer = Lamb([w, b], lr=1e-2, eps=1e-5, weight_decay=1e-5)
    run(optimizer, w, b, 2)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "w": w.detach(), "b": b.detach()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    w2 = saved["w"].clone().requires_grad_(True)
    b2 = saved["b"].clone().requires_grad_(True)
    resumed = Lamb([w2, b2], lr=1e-2, eps=1e-5, weight_decay=1e-5)
    resumed.load_state_dict(saved["optimizer"])
    assert resumed.param_groups[0]["step"] == 2
    run(optimizer, w, b, 1)
    run(resumed, w2, b2, 1)
    assert torch.equal(w, w2) and torch.equal(b, b2)


def _published_epoch_lr(base_lr: float, epoch: int, warmup_epoch: int, max_epoch: int) -> float:
    """The published per-epoch schedule, written from its formula."""
    if 0 <= epoch <= warmup_epoch and warmup_epoch != 0:
        return base_lr if epoch == warmup_epoch else base_lr * 2.718 ** (10 * (epoch / warmup_epoch - 1.0))
    return base_lr * (1 - epoch / max_epoch) ** 0.9


def test_schedule_equals_the_published_formula() -> None:
    for it in range(0, 200):
        assert warmup_poly_factor(it, 5, 200) * 2e-3 == pytest.approx(_published_epoch_lr(2e-3, it, 5, 200), rel=1e-12)
    assert warmup_poly_factor(0, 5, 200) == pytest.approx(2.718**-10)
    assert warmup_poly_factor(200, 5, 200) == 0.0 and warmup_poly_factor(250, 5, 200) == 0.0
    assert warmup_poly_factor(0, 0, 10) == 1.0
    with pytest.raises(ValueError, match="warmup_iters must be in"):
        WarmupPolySchedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 10, 10)
    with pytest.raises(ValueError, match="total_iters > 0"):
        WarmupPolySchedule(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 0, 0)


def test_schedule_steps_per_iteration_in_an_ignite_engine() -> None:
    weight = torch.zeros(2, requires_grad=True)
    optimizer = Lamb([weight], lr=2e-3, weight_decay=1e-5)
    scheduler = WarmupPolySchedule(optimizer, warmup_iters=4, total_iters=12)
    seen: list[float] = []

    def train_step(engine, batch):
        optimizer.zero_grad()
        (weight - torch.tensor([1.0, -1.0])).pow(2).sum().backward()
        optimizer.step()

    engine = Engine(train_step)
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(optimizer.param_groups[0]["lr"]))
    LrScheduleHandler(scheduler, epoch_level=False, print_lr=False).attach(engine)
    engine.run(range(4), max_epochs=3)  # 3 epochs × 4 iterations = the whole schedule
    expected = [2e-3 * warmup_poly_factor(i, 4, 12) for i in range(12)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert seen[4] == 2e-3 and seen[5] < 2e-3 and seen[0] < 1e-7


def test_resumed_schedule_continues_at_its_position_with_the_new_length() -> None:
    """A resumed run keeps its position but follows its own configuration (e.g. a raised --max_epochs)."""
    weight = torch.zeros(2, requires_grad=True)
    optimizer = Lamb([weight], lr=2e-3)
    scheduler = WarmupPolySchedule(optimizer, warmup_iters=2, total_iters=8)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "schedule": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    weight2 = torch.zeros(2, requires_grad=True)
    optimizer2 = Lamb([weight2], lr=2e-3)
    longer = WarmupPolySchedule(optimizer2, warmup_iters=2, total_iters=16)
    optimizer2.load_state_dict(saved["optimizer"])  # carries the rate of the old, shorter schedule
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(2e-3 * warmup_poly_factor(6, 2, 8))
    longer.load_state_dict(saved["schedule"])
    assert longer.last_epoch == 6
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(2e-3 * warmup_poly_factor(6, 2, 16))
    assert longer.get_last_lr() == [optimizer2.param_groups[0]["lr"]]
    optimizer2.step()
    longer.step()
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(2e-3 * warmup_poly_factor(7, 2, 16))


def test_a_parameter_kept_in_bfloat16_gets_the_float32_step_rounded() -> None:
    """The multi-tensor step computes in float32 and writes a lower-precision parameter back in its own dtype."""
    torch.manual_seed(0)
    start = torch.randn(6, 4).to(torch.bfloat16)
    grad = torch.randn(6, 4).to(torch.bfloat16)
    low = torch.nn.Parameter(start.clone())
    full = torch.nn.Parameter(start.float())
    other = torch.nn.Parameter(torch.ones(3))  # a second tensor in the same group: the global clip spans both
    for param, g in ((low, grad), (full, grad.float())):
        param.grad = g.clone()
    other.grad = torch.full((3,), 5.0)
    Lamb([low, other], lr=1e-2, weight_decay=0.05).step()
    other.data.fill_(1.0)
    other.grad = torch.full((3,), 5.0)
    Lamb([full, other], lr=1e-2, weight_decay=0.05).step()
    assert low.dtype == torch.bfloat16
    assert torch.equal(low.detach(), full.detach().to(torch.bfloat16))
    assert not torch.equal(low.detach(), start)
