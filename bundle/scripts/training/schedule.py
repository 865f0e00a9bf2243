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


class WarmupPolySchedule(LambdaLR):
    """``LambdaLR`` with :func:`warmup_poly_factor`; the first iteration runs at ``WARMUP_BASE ** -10`` × base.

    Its checkpoint restores only its position: a resumed run continues at the saved iteration but with the current
    configuration's base rate and length (a raised ``--max_epochs`` lengthens it), and its optimiser gets the rate of
    that position at once (the saved optimiser carries the rate of the old schedule). Restore it after the optimiser.
    The factor is a ``functools.partial``, whose settings are not part of the ``state_dict``.
    """

    POSITION_KEYS = ("last_epoch", "_step_count")

    def __init__(self, optimizer: Optimizer, warmup_iters: float, total_iters: float, power: float = 0.9) -> None:
        warmup, total = int(warmup_iters), int(total_iters)
        if total <= 0:
            raise ValueError(f"the schedule needs total_iters > 0 (max_epochs × iterations_per_epoch), got {total}")
        if not 0 <= warmup < total:
            raise ValueError(f"warmup_iters must be in [0, total_iters), got {warmup} of {total}")
        super().__init__(optimizer, partial(warmup_poly_factor, warmup_iters=warmup, total_iters=total, power=power))

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        current = self.state_dict()
        current.update({key: state_dict[key] for key in self.POSITION_KEYS if key in state_dict})
        super().load_state_dict(current)
        for group, base, factor in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base * factor(self.last_epoch)

    def get_last_lr(self) -> list[float]:
        """The rates in use: the optimiser's (equal to torch's record after every step, and right after a restore)."""
        return [group["lr"] for group in self.optimizer.param_groups]


def epoch_schedule(
    optimizer: Optimizer, warmup_epochs: float, max_epochs: float, iterations_per_epoch: int, power: float = 0.9
) -> WarmupPolySchedule:
    """:class:`WarmupPolySchedule` with its lengths in epochs, as the configs give them."""
    return WarmupPolySchedule(optimizer, warmup_epochs * iterations_per_epoch, max_epochs * iterations_per_epoch, power)
