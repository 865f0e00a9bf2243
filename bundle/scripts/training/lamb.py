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
        norms = [grad.detach().float().norm() for grad in grads]
        if not norms:
            return 1.0
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
            beta1, beta2 = group["betas"]
            decay = group["weight_decay"]
            group["step"] = group.get("step", 0) + 1  # one count per group, as the published (apex) optimiser keeps
            step = group["step"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(param, dtype=torch.float32)
                grad = param.grad.float() / divisor
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                m_hat = exp_avg / (1.0 - beta1**step)
                v_hat = exp_avg_sq / (1.0 - beta2**step)
                update = m_hat / (v_hat.sqrt() + group["eps"])
                weights = param.float()
                if decay != 0.0:
                    update = update.add(weights, alpha=decay)
                    weight_norm = weights.norm()
                    update_norm = update.norm()
                    trust = torch.where(
                        (weight_norm > 0) & (update_norm > 0), weight_norm / update_norm, torch.ones_like(weight_norm)
                    )
                else:
                    trust = torch.ones((), device=param.device)
                param.copy_((weights - group["lr"] * trust * update).to(param.dtype))
        return loss
