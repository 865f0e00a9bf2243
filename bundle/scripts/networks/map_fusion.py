"""Hermes-M's semantic-map fusion: the map tokens of encoder stages 2-4 exchange information in one small transformer.

Each stage's tokens are projected to a common width, concatenated, run through pre-norm self-attention + MLP layers
(LayerNorm eps 1e-4, GELU MLP of hidden width = width) and projected back to their stage's width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .bidirectional import head_count
from .priors import FFN_NORM_EPS, TokenMLP


class TokenSelfAttention(nn.Module):
    """Pre-normed multi-head self-attention (one bias-free qkv projection, heads as ``(head, dim)`` channel blocks)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = head_count(dim)
        self.norm = nn.LayerNorm(dim, eps=FFN_NORM_EPS)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.unflatten(2, (self.heads, -1)).transpose(1, 2) for t in self.to_qkv(self.norm(x)).chunk(3, dim=2))
        return self.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class TokenTransformerLayer(nn.Module):
    """x + attention(x), then + MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = TokenSelfAttention(dim)
        self.mlp = TokenMLP(dim, hidden=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class SemanticMapFusion(nn.Module):
    """Maps of several stages (``B × K × C_i`` each, same K) -> the same maps after joint self-attention."""

    def __init__(self, channels: Sequence[int], dim: int, depth: int) -> None:
        super().__init__()
        self.in_proj = nn.ModuleList(nn.Linear(c, dim, bias=False) for c in channels)
        self.layers = nn.ModuleList(TokenTransformerLayer(dim) for _ in range(depth))
        self.out_proj = nn.ModuleList(nn.Linear(dim, c, bias=False) for c in channels)

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        x = torch.cat([proj(m) for proj, m in zip(self.in_proj, maps)], dim=1)
        for layer in self.layers:
            x = layer(x)
        return [proj(part) for proj, part in zip(self.out_proj, x.chunk(len(maps), dim=1))]
