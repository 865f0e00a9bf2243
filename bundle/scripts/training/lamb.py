"""The LAMB optimiser of the Hermes recipe.

The published training uses NVIDIA apex's fused LAMB (a CUDA-only package). ``Lamb`` here follows the same update
rule in plain PyTorch, so it runs on any device:

1. the gradients of all parameters are divided by ``max(global_grad_norm / max_grad_norm, 1)`` (global clipping);
2. Adam moments with bias correction: m = β1·m + (1-β1)·g, v = β2·v + (1-β2)·g², u = m̂ / (√v̂ + eps);
3. decoupled weight decay: u = u + weight_decay · p;
4. layer-wise trust ratio: p = p - lr · (‖p‖ / ‖u‖) · u (ratio 1 where a norm is zero, and for parameters whose
   group has weight_decay 0, which get plain lr · u).

The release setting is ``Lamb(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-5, weight_decay=1e-5)`` (Hermes-M uses
weight_decay 0.05); max_grad_norm 1.0 is the published default.

Like apex's fused kernel, a step updates all tensors of a device at once (``torch._foreach_*`` multi-tensor ops) instead
of one Python loop turn per tensor: the release network has 405 tensors, so a per-tensor loop costs thousands of small
kernel launches per step on a GPU. The arithmetic is the same, operation for operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    """Layer-wise Adaptive Moments (You et al., 2020) with global gradient clipping and decoupled weight decay."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = 1.0,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}; each must be in [0, 1)")
        if eps <= 0.0:
            raise ValueError(f"invalid eps {eps}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay}")
        if max_grad_norm is not None and max_grad_norm <= 0.0:
            raise ValueError(f"invalid max_grad_norm {max_grad_norm}; use None to disable clipping")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm

    @torch.no_grad()
    def _clip_divisor(self) -> torch.Tensor | float:
        """The factor all gradients are divided by: global norm / max_grad_norm when above 1, else 1."""
        if self.max_grad_norm is None:
            return 1.0
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return 1.0
        norms = [n.float().to(grads[0].device) for n in torch._foreach_norm(grads)]
        global_norm = torch.linalg.vector_norm(torch.stack(norms))
        return torch.clamp(global_norm / self.max_grad_norm, min=1.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        divisor = self._clip_divisor()
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1  # one count per group, as the published (apex) optimiser keeps
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("Lamb does not support sparse gradients")
            by_device: dict[torch.device, list[torch.Tensor]] = {}
            for param in params:
                by_device.setdefault(param.device, []).append(param)
            for on_device in by_device.values():
                self._update(on_device, group, divisor)
        return loss

    def _update(self, params: list[torch.Tensor], group: dict[str, Any], divisor: torch.Tensor | float) -> None:
        """One LAMB step of ``params`` (all on one device) with multi-tensor operations."""
        beta1, beta2 = group["betas"]
        decay, step = group["weight_decay"], group["step"]
        for param in params:
            if not self.state[param]:
                self.state[param]["exp_avg"] = torch.zeros_like(param, dtype=torch.float32)
                self.state[param]["exp_avg_sq"] = torch.zeros_like(param, dtype=torch.float32)
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        divisor = divisor.to(params[0].device) if isinstance(divisor, torch.Tensor) else divisor
        grads = torch._foreach_div([p.grad.float() for p in params], divisor)
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        updates = torch._foreach_div(exp_avgs, 1.0 - beta1**step)  # m̂
        denominators = torch._foreach_div(exp_avg_sqs, 1.0 - beta2**step)  # v̂
        torch._foreach_sqrt_(denominators)
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_div_(updates, denominators)
        weights = [p.float() for p in params]  # the parameters themselves when float32
        if decay != 0.0:
            torch._foreach_add_(updates, weights, alpha=decay)
            weight_norms = torch.stack(torch._foreach_norm(weights))
            update_norms = torch.stack(torch._foreach_norm(updates))
            usable = (weight_norms > 0) & (update_norms > 0)
            trust = torch.where(usable, weight_norms / update_norms, torch.ones_like(weight_norms))
            torch._foreach_mul_(updates, list((group["lr"] * trust).unbind(0)))
        else:
            torch._foreach_mul_(updates, group["lr"])
        torch._foreach_sub_(weights, updates)
        for param, weight in zip(params, weights):
            if weight is not param:  # a parameter kept in another precision gets its float32 result rounded back
                param.copy_(weight.to(param.dtype))
