"""The learning-rate schedule of the Hermes recipe: exponential warm-up, then poly decay.

The published code applies the factor once per epoch (5 warm-up epochs of 200, 400 iterations each). Here it is a
torch ``LambdaLR`` stepped once per iteration (MONAI ``LrScheduleHandler(epoch_level=False)``): with
``warmup_iters = 5 * 400`` and ``total_iters = 200 * 400`` it follows the same curve without steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

#: Base of the exponential warm-up in the published schedule (a rounded e).
WARMUP_BASE = 2.718
#: Exponent scale of the warm-up: the first step starts at WARMUP_BASE ** -10 ≈ 4.5e-5 of the base rate.
WARMUP_SCALE = 10.0


def warmup_poly_factor(iteration: int, warmup_iters: int, total_iters: int, power: float = 0.9) -> float:
    """Learning-rate multiplier at a 0-based iteration of the published schedule.

    Warm-up (0 <= it <= warmup): WARMUP_BASE ** (10 · (it / warmup - 1)), exactly 1 at it = warmup. Afterwards
    (1 - it / total) ** power, counted from the start of training as in the published code (so the factor drops
    slightly below 1 right after the warm-up), and 0 from ``total_iters`` on.
    """
    if warmup_iters > 0 and 0 <= iteration <= warmup_iters:
        if iteration == warmup_iters:
            return 1.0
        return WARMUP_BASE ** (WARMUP_SCALE * (iteration / warmup_iters - 1.0))
    remaining = 1.0 - iteration / total_iters
    return remaining**power if remaining > 0.0 else 0.0


def warmup_poly_schedule(optimizer: Optimizer, warmup_iters: float, total_iters: float, power: float = 0.9) -> LambdaLR:
    """``LambdaLR`` with :func:`warmup_poly_factor`; the first iteration runs at ``WARMUP_BASE ** -10`` × base.

    The factor is a ``functools.partial``, whose settings are not part of the scheduler's ``state_dict``: a resumed
    run keeps the schedule of its own configuration (a raised ``--max_epochs`` lengthens it).
    """
    warmup, total = int(warmup_iters), int(total_iters)
    if total <= 0:
        raise ValueError(f"the schedule needs total_iters > 0 (max_epochs × iterations_per_epoch), got {total}")
    if not 0 <= warmup < total:
        raise ValueError(f"warmup_iters must be in [0, total_iters), got {warmup} of {total}")
    return LambdaLR(optimizer, partial(warmup_poly_factor, warmup_iters=warmup, total_iters=total, power=float(power)))


class SchedulePosition:
    """Checkpoint entry of a ``LambdaLR``: saves its state, restores only its position.

    A resumed run continues at the saved iteration but with the current configuration's base rate and length, and
    its optimiser gets the rate of that position at once (the saved optimiser carries the rate of the old schedule).
    Restore it after the optimiser.
    """

    POSITION_KEYS = ("last_epoch", "_step_count")

    def __init__(self, scheduler: LambdaLR) -> None:
        self.scheduler = scheduler

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        current = self.scheduler.state_dict()
        current.update({key: state[key] for key in self.POSITION_KEYS if key in state})
        self.scheduler.load_state_dict(current)
        position = self.scheduler.last_epoch
        rates = [base * factor(position) for base, factor in zip(self.scheduler.base_lrs, self.scheduler.lr_lambdas)]
        for group, rate in zip(self.scheduler.optimizer.param_groups, rates):
            group["lr"] = rate
        self.scheduler._last_lr = rates  # what get_last_lr() reports until the next step
