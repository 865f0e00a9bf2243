"""Convolutional pieces of the Hermes-M (MedFormer) backbone: down-sampling, semantic maps, MBConv feed-forward.

Every piece computes what the published ``hermes_medformer`` code computes (tests/test_network_medformer.py checks the
whole network against reference outputs); where the published layers differ from the obvious choice the docstring
says how, because a checkpoint only loads into the exact computation.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import ChannelSELayer
from torch import nn

from .blocks import PreActConv, residual_stack, upsample_to

#: Instance-norm eps of the patch merging (PyTorch's default; the conv units use 1e-4).
MERGE_NORM_EPS = 1e-5
#: Squeeze-and-excitation reduction of the MBConv feed-forward.
SE_RATIO = 4


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3×3×3 then pointwise 1×1×1 convolution, both bias-free."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv3d(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv3d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``B × C × 2D × 2H × 2W`` -> ``B × 8C × D × H × W``.

    Channel block ``4i + 2j + k`` holds the voxels at offset (i, j, k), each block all C channels: the order of the
    published patch merging (MONAI's ``pixelunshuffle`` interleaves channels and offsets the other way round).
    """
    b, c, d, h, w = x.shape
    x = x.reshape(b, c, d // 2, 2, h // 2, 2, w // 2, 2)
    return x.permute(0, 3, 5, 7, 1, 2, 4, 6).reshape(b, 8 * c, d // 2, h // 2, w // 2)


class PatchMerging(nn.Module):
    """Halves the resolution: space-to-depth, affine-free instance norm (eps 1e-5), depthwise-separable reduction."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm3d(8 * in_channels, eps=MERGE_NORM_EPS, affine=False)
        self.reduction = DepthwiseSeparableConv(8 * in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(space_to_depth(x)))


class SemanticMap(nn.Module):
    """A few tokens that summarise a feature map: token t is the softmax(over voxels)-weighted mean of projected
    features, with the weights from a second projection (one output channel per token)."""

    def __init__(self, channels: int, num_tokens: int) -> None:
        super().__init__()
        self.features = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        self.assignment = nn.Conv3d(channels, num_tokens, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B × C × D × H × W`` -> ``B × num_tokens × C``."""
        weights = torch.softmax(self.assignment(x).flatten(2), dim=2)  # B × K × voxels
        return torch.bmm(weights, self.features(x).flatten(2).transpose(1, 2))


class MBConvFeedForward(nn.Module):
    """Inverted bottleneck: pre-activation 1×1 expansion, depthwise 3×3×3, squeeze-and-excitation, 1×1 projection
    (norm without activation), plus the input.

    The published excitation uses 1×1×1 convolutions with bias; MONAI's ``ChannelSELayer`` computes the same with
    Linear layers (the converter reshapes those kernels).
    """

    def __init__(self, channels: int, expansion: int) -> None:
        super().__init__()
        expanded = expansion * channels
        self.expand: nn.Module = nn.Identity() if expansion == 1 else PreActConv(channels, expanded, 1)
        self.depthwise = PreActConv(expanded, expanded, 3, groups=expanded)
        self.squeeze = ChannelSELayer(3, expanded, r=SE_RATIO, acti_type_1="relu")
        self.project = PreActConv(expanded, channels, 1, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.squeeze(self.depthwise(self.expand(x)))) + x


class ConvDownStage(nn.Module):
    """Encoder stage 1 (the end of the convolutional stem): patch merging, then residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int) -> None:
        super().__init__()
        self.merge = PatchMerging(in_channels, out_channels)
        self.blocks = residual_stack(out_channels, out_channels, num_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.merge(x))


class MapDownStage(nn.Module):
    """The task-free half of encoder stages 2-4: patch merging and the stage's semantic map (a fusion site follows)."""

    def __init__(self, in_channels: int, out_channels: int, map_tokens: int) -> None:
        super().__init__()
        self.merge = PatchMerging(in_channels, out_channels)
        self.semantic_map = SemanticMap(out_channels, map_tokens)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.merge(x)
        return x, self.semantic_map(x)


class MapUpStage(nn.Module):
    """The task-free half of decoder stages 1-2: [upsampled, skip] features (upsampled first, unlike Hermes-R) and a
    map merged from the deeper stage's map and the skip's map by a bias-free Linear."""

    def __init__(self, deep_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.map_reduction = nn.Linear(deep_channels + skip_channels, skip_channels, bias=False)

    def forward(
        self, deep: torch.Tensor, skip: torch.Tensor, deep_map: torch.Tensor, skip_map: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.cat([upsample_to(deep, skip), skip], dim=1)
        return features, self.map_reduction(torch.cat([deep_map, skip_map], dim=2))
