"""Hermes-M's fusion sites: bidirectional attention between a feature map and its tokens (semantic map + priors).

One logit matrix ``q_voxel · q_token / √d`` per head serves both directions: softmax over the tokens lets every voxel
read from the tokens, softmax over the voxels lets every token read from the image. Each direction is exactly one
``scaled_dot_product_attention`` (the second with queries and keys swapped), so no voxel × token matrix is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import PreActConv
from .medformer_blocks import DepthwiseSeparableConv, MBConvFeedForward
from .priors import PriorTables

#: Width of one attention head (the head count is channels // 32, at least 1).
HEAD_DIM = 32
#: Instance-norm eps of the block's feature norm and LayerNorm eps of its token norm (PyTorch defaults).
ATTENTION_NORM_EPS = 1e-5


def head_count(channels: int) -> int:
    """Heads of an attention stage; they must split the channels evenly (true for every base width of 8·k)."""
    heads = max(channels // HEAD_DIM, 1)
    if channels % heads:
        raise ValueError(
            f"{channels} channels do not split into {heads} attention heads; choose base_channels "
            "so that every stage width is a multiple of its head count (e.g. a multiple of 8)"
        )
    return heads


class BidirectionalBlock(nn.Module):
    """Pre-normed bidirectional attention, residual on both sides, then an MBConv feed-forward on the features.

    Head split as published: channel ``c`` belongs to head ``c % heads`` (dimension ``c // heads``), head index fastest.
    The first block of a decoder site narrows the concatenated features (``in_channels`` > ``channels``) and adds a
    1×1×1 pre-activation shortcut; the last block of the last site has no token projection (``token_output=False``).
    """

    def __init__(self, in_channels: int, channels: int, expansion: int, token_output: bool = True) -> None:
        super().__init__()
        self.heads = head_count(channels)
        self.feature_norm = nn.InstanceNorm3d(in_channels, eps=ATTENTION_NORM_EPS, affine=False)
        self.token_norm = nn.LayerNorm(channels, eps=ATTENTION_NORM_EPS)
        self.feature_qv = DepthwiseSeparableConv(in_channels, 2 * channels)
        self.feature_out = DepthwiseSeparableConv(channels, channels)
        self.token_qv = nn.Linear(channels, 2 * channels, bias=False)
        self.token_out: nn.Module = nn.Linear(channels, channels, bias=False) if token_output else nn.Identity()
        self.shortcut: nn.Module = nn.Identity() if in_channels == channels else PreActConv(in_channels, channels, 1)
        self.feedforward = MBConvFeedForward(channels, expansion)

    def _attend(self, features: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, d, h, w = features.shape
        heads = self.heads
        feature_q, feature_v = self.feature_qv(features).flatten(2).chunk(2, dim=1)  # B × C × N each
        token_q, token_v = self.token_qv(tokens).chunk(2, dim=2)  # B × K × C each
        # (dim, head) channel order -> B × heads × length × head_dim
        feature_q, feature_v = (t.unflatten(1, (-1, heads)).permute(0, 2, 3, 1) for t in (feature_q, feature_v))
        token_q, token_v = (t.unflatten(2, (-1, heads)).permute(0, 3, 1, 2) for t in (token_q, token_v))
        from_tokens = F.scaled_dot_product_attention(feature_q, token_q, token_v)  # softmax over tokens
        from_voxels = F.scaled_dot_product_attention(token_q, feature_q, feature_v)  # softmax over voxels
        from_tokens = from_tokens.permute(0, 3, 1, 2).reshape(b, -1, d, h, w)
        from_voxels = from_voxels.permute(0, 2, 3, 1).flatten(2)
        return self.feature_out(from_tokens), self.token_out(from_voxels)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, new_tokens = self._attend(self.feature_norm(x), self.token_norm(tokens))
        features = self.feedforward(features + self.shortcut(x))
        return features, new_tokens + tokens


class BidirectionalFusionSite(PriorTables):
    """One Hermes-M fusion site: its prior tables, appended to the stage's semantic map, and its attention blocks.

    Returns the features, the posterior map tokens and the posterior prior tokens ([tasks, modality]).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_blocks: int,
        expansion: int,
        num_tasks: int,
        num_modalities: int,
        modality_tokens: int,
        last_token_output: bool = True,
    ) -> None:
        super().__init__(channels, num_tasks, num_modalities, modality_tokens)
        if num_blocks < 1:
            raise ValueError(f"a fusion site needs at least one attention block, got {num_blocks}")
        self.blocks = nn.ModuleList(
            BidirectionalBlock(
                in_channels if i == 0 else channels,
                channels,
                expansion,
                token_output=last_token_output or i < num_blocks - 1,
            )
            for i in range(num_blocks)
        )

    def forward(
        self, x: torch.Tensor, semantic_map: torch.Tensor, task_index: torch.Tensor, modality_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        map_tokens = semantic_map.shape[1]
        tokens = torch.cat([semantic_map, self.select_priors(task_index, modality_index)], dim=1)
        for block in self.blocks:
            x, tokens = block(x, tokens)
        return x, tokens[:, :map_tokens], tokens[:, map_tokens:]
