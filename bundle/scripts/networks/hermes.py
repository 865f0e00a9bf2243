"""Hermes-R: the ResUNet backbone with context-prior learning (Gao et al., CVPR 2024).

Computes what the published Hermes-R computes (checked against reference outputs in tests/test_network_parity.py);
the published checkpoint loads after renaming with ``scripts.convert_checkpoint``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import SIZE_DIVISOR, Decoded, HermesNetwork
from .blocks import DecoderStage, EncoderStage, Stem
from .heads import ModalityHead, PosteriorPrototypeHead
from .priors import PriorFusionLayer

# Channel multipliers of the five resolution levels, relative to the base width.
LEVEL_WIDTHS = (1, 2, 4, 8, 10)
# Where priors are fused: (level, number of prior-attention blocks) after encoder stages 2-4, then decoder stages 1-2.
FUSION_SITES = ((2, 2), (3, 2), (4, 4), (3, 2), (2, 2))


class HermesResUNet(HermesNetwork):
    """Universal segmentation network: one binary output channel per requested task.

    Args:
        in_channels: image channels (1 for CT, PET and single-sequence MRI).
        base_channels: width of the full-resolution level (32 in the release).
        num_blocks: residual blocks in encoder stages 1-4; decoder stages 1-3 mirror stages 3-1, the last has 2.
        num_tasks: task prior rows, excluding the null row (72 in the release: 71 tasks + one unused row).
        num_modalities: modality prior rows (6 in the release: CT, PET, T1, T2, cine MRI, unknown MRI).
        modality_tokens: tokens per modality (10 in the release).
        size_divisor: every input side must be a multiple of this (16 = no voxel lost to pooling); 1 accepts any size
            and then behaves exactly like the published code, flooring odd sizes.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_tasks: int = 72,
        num_modalities: int = 6,
        modality_tokens: int = 10,
        size_divisor: int = SIZE_DIVISOR,
    ) -> None:
        super().__init__(num_tasks, num_modalities, size_divisor)
        if len(num_blocks) != 4:
            raise ValueError(f"num_blocks needs one count per encoder stage (4), got {list(num_blocks)}")
        if base_channels < 1 or num_tasks < 1 or num_modalities < 1 or modality_tokens < 1:
            raise ValueError("base_channels, num_tasks, num_modalities and modality_tokens must all be positive")
        widths = [w * base_channels for w in LEVEL_WIDTHS]

        self.stem = Stem(in_channels, widths[0])
        self.encoder = nn.ModuleList(EncoderStage(widths[i], widths[i + 1], num_blocks[i]) for i in range(4))
        decoder_blocks = (num_blocks[2], num_blocks[1], num_blocks[0], 2)
        self.decoder = nn.ModuleList(DecoderStage(widths[4 - i], widths[3 - i], decoder_blocks[i]) for i in range(4))
        self.fusion = nn.ModuleList(
            PriorFusionLayer(widths[level], blocks, num_tasks, num_modalities, modality_tokens)
            for level, blocks in FUSION_SITES
        )
        token_dim = sum(widths[level] for level, _ in FUSION_SITES)  # 34 × base
        self.task_head = PosteriorPrototypeHead(token_dim, widths[0])
        self.modality_head = ModalityHead(token_dim, num_modalities)

    def encode_context_free(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The part of the network the task tokens do not reach: stem and encoder stages 1-2, before the first fusion.

        Returns ``[full-resolution skip, half-resolution skip, quarter-resolution features]``. A caller running several
        task contexts on one image computes this once (``forward_contexts``): it is about a fifth of the work.
        """
        skips = [self.stem(image)]
        skips.append(self.encoder[0](skips[0]))
        skips.append(self.encoder[1](skips[1]))
        return skips

    def decode(
        self, shared: list[torch.Tensor], task_index: torch.Tensor, modality_index: torch.Tensor, auxiliary: bool
    ) -> Decoded:
        """Encoder stages 3-4 and the decoder from ``encode_context_free``'s output; no auxiliary head."""
        skips = list(shared[:2])
        tokens = []
        x = shared[2]
        for level in range(2, 5):  # fusion after encoder stages 2, 3 and 4
            if level > 2:
                x = self.encoder[level - 1](x)
            x, priors = self.fusion[level - 2](x, task_index, modality_index)
            tokens.append(priors)
            skips.append(x)

        x = skips[4]
        for i, stage in enumerate(self.decoder):
            x = stage(x, skips[3 - i])
            if i < 2:  # fusion after decoder stages 1 and 2
                x, priors = self.fusion[3 + i](x, task_index, modality_index)
                tokens.append(priors)
        return Decoded(x, torch.cat(tokens, dim=2))  # posterior: B × (n + L) × 34·base
