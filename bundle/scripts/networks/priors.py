"""Context priors of Hermes: learned task/modality tokens that exchange information with image features.

Each fusion layer owns its own prior tables. For every sample it selects the tokens of the requested tasks (−1 → the
null token used to pad task lists) and the ten tokens of the sample's modality (−1 → the last row, "unknown MR
sequence"), then runs a few two-way cross-attention blocks between those tokens and the flattened feature map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEAD_DIM = 32
MLP_RATIO = 4
FFN_NORM_EPS = 1e-4


class CrossAttention(nn.Module):
    """Pre-normed multi-head attention of ``query`` tokens over ``context`` tokens (head dim 32, no dropout)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.heads = max(dim // HEAD_DIM, 1)
        inner = HEAD_DIM * self.heads
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, HEAD_DIM).transpose(1, 2)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.to_q(self.norm_query(query)))
        k, v = self.to_kv(self.norm_context(context)).chunk(2, dim=-1)
        attended = F.scaled_dot_product_attention(q, self._split_heads(k), self._split_heads(v))
        b, _, n, _ = attended.shape
        return self.to_out(attended.transpose(1, 2).reshape(b, n, self.heads * HEAD_DIM))


class TokenMLP(nn.Module):
    """Pre-normed two-layer GELU MLP (LayerNorm eps 1e-4, hidden width 4 × dim unless ``hidden`` is given)."""

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = MLP_RATIO * dim if hidden is None else hidden
        self.norm = nn.LayerNorm(dim, eps=FFN_NORM_EPS)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class PriorAttentionBlock(nn.Module):
    """Priors read from the image, then the image reads from the updated priors (both residual)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.prior_attn = CrossAttention(dim)
        self.prior_mlp = TokenMLP(dim)
        self.feature_attn = CrossAttention(dim)
        self.feature_mlp = TokenMLP(dim)

    def forward(self, features: torch.Tensor, priors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        priors = priors + self.prior_attn(priors, features)
        priors = priors + self.prior_mlp(priors)
        features = features + self.feature_attn(features, priors)
        features = features + self.feature_mlp(features)
        return features, priors


def wrap_negative(index: torch.Tensor, rows: int) -> torch.Tensor:
    """Map −1 to the table's last row without relying on negative advanced indexing (export friendly)."""
    return torch.where(index < 0, index + rows, index)


class PriorTables(nn.Module):
    """The prior tables of one fusion site: task ((T + 1) × C, last row = null) and modality (M × L × C)."""

    def __init__(self, dim: int, num_tasks: int, num_modalities: int, modality_tokens: int) -> None:
        super().__init__()
        self.task_prior = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_tasks + 1, dim)))
        self.modality_prior = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_modalities, modality_tokens, dim)))

    def select_priors(self, task_index: torch.Tensor, modality_index: torch.Tensor) -> torch.Tensor:
        """Gather [task tokens (B × n), modality tokens (B × L)] for the whole batch in one indexing op each."""
        task_tokens = self.task_prior[wrap_negative(task_index, self.task_prior.shape[0])]
        modality_tokens = self.modality_prior[wrap_negative(modality_index, self.modality_prior.shape[0])]
        return torch.cat([task_tokens, modality_tokens], dim=1)


class PriorFusionLayer(PriorTables):
    """One Hermes-R fusion site: its prior tables and prior-attention blocks over the flattened feature map."""

    def __init__(self, dim: int, num_blocks: int, num_tasks: int, num_modalities: int, modality_tokens: int) -> None:
        super().__init__(dim, num_tasks, num_modalities, modality_tokens)
        self.blocks = nn.ModuleList(PriorAttentionBlock(dim) for _ in range(num_blocks))

    def forward(
        self, x: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, c = x.shape[:2]
        spatial = x.shape[2:]
        features = x.flatten(2).transpose(1, 2)
        priors = self.select_priors(task_index, modality_index)
        for block in self.blocks:
            features, priors = block(features, priors)
        return features.transpose(1, 2).reshape(b, c, *spatial), priors
