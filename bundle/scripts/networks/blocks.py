"""Convolutional building blocks of the Hermes ResUNet backbone.

The published backbone uses *pre-activation* residual blocks (norm → ReLU → conv) with affine-free instance
norm (eps 1e-4). MONAI's ``ResidualUnit`` is post-activation, so these small blocks are written here to compute
exactly what the published model computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_EPS = 1e-4


class PreActConv(nn.Module):
    """InstanceNorm → ReLU → Conv3d (bias-free), the unit every residual block is made of.

    ``groups`` and ``activate=False`` (norm → conv) serve the MBConv feed-forward of Hermes-M.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activate: bool = True,
    ) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm3d(in_channels, eps=NORM_EPS, affine=False)
        self.act = nn.ReLU(inplace=False) if activate else nn.Identity()
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.norm(x)))


class ResidualBlock(nn.Module):
    """Two pre-activation convolutions plus a shortcut (identity, or one more pre-activation conv on a width change)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = PreActConv(in_channels, out_channels, kernel_size)
        self.conv2 = PreActConv(out_channels, out_channels, kernel_size)
        self.shortcut: nn.Module = (
            nn.Identity() if in_channels == out_channels else PreActConv(in_channels, out_channels, kernel_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + self.shortcut(x)


def residual_stack(in_channels: int, out_channels: int, num_blocks: int) -> nn.Sequential:
    """``num_blocks`` residual blocks; the first one changes the width."""
    if num_blocks < 1:
        raise ValueError(f"a stage needs at least one residual block, got num_blocks={num_blocks}")
    blocks = [ResidualBlock(in_channels, out_channels)]
    blocks += [ResidualBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class Stem(nn.Module):
    """Full-resolution entry: a plain 3×3×3 convolution to the base width, then one residual block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False)
        self.block = ResidualBlock(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.conv(x))


class EncoderStage(nn.Module):
    """Max-pool by 2, then a stack of residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d(2)
        self.blocks = residual_stack(in_channels, out_channels, num_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pool(x))


def upsample_to(deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Trilinear (align_corners=True) to the skip's size, in float32 as the published model does under autocast,
    returned in the skip's dtype."""
    up = F.interpolate(deep.float(), size=skip.shape[2:], mode="trilinear", align_corners=True)
    return up.to(skip.dtype)


class DecoderStage(nn.Module):
    """Upsampling to the skip's size, concatenation [skip, up] (Hermes-R) or [up, skip] (Hermes-M,
    ``upsampled_first``), residual blocks."""

    def __init__(self, deep_channels: int, skip_channels: int, num_blocks: int, upsampled_first: bool = False) -> None:
        super().__init__()
        self.upsampled_first = upsampled_first
        self.blocks = residual_stack(deep_channels + skip_channels, skip_channels, num_blocks)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = upsample_to(deep, skip)
        return self.blocks(torch.cat([up, skip] if self.upsampled_first else [skip, up], dim=1))
