"""Hermes-M: the MedFormer backbone with context-prior learning (Gao et al., CVPR 2024).

Computes what the published ``Hermes_MedFormer`` computes (checked against reference outputs in
tests/test_network_medformer.py); a published-format checkpoint loads after renaming with ``scripts.convert_checkpoint``
(which recognises the backbone by its tensor names). The contract (``forward``, ``check_inputs``, the context
protocol) is :class:`~scripts.networks.base.HermesNetwork`'s; this module implements the MedFormer encoder and decoder.

Auxiliary output: in training mode (``network.train()``, what MONAI's trainer sets) the segmentation output is the
list ``[main logits, auxiliary logits]`` for ``HermesLoss(deep_supervision_weights=[0.5, 0.5])``; in eval mode (EMA
model, validation, inference, export) only the main logits. ``return_auxiliary`` overrides the mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import SIZE_DIVISOR, Decoded, HermesNetwork
from .bidirectional import BidirectionalFusionSite
from .blocks import DecoderStage, Stem
from .heads import ModalityHead, PosteriorPrototypeHead
from .hermes import LEVEL_WIDTHS
from .map_fusion import SemanticMapFusion
from .medformer_blocks import ConvDownStage, MapDownStage, MapUpStage

# Fusion sites as (level, level of the deeper input or None): after encoder stages 2-4, then decoder stages 1-2.
FUSION_SITES = ((2, None), (3, None), (4, None), (3, 4), (2, 3))


class HermesMedFormer(HermesNetwork):
    """Universal segmentation network on the MedFormer backbone: one binary output channel per requested task.

    Args:
        in_channels: image channels (1 for CT, PET and single-sequence MRI).
        base_channels: width of the full-resolution level (32 in the release); levels are 1, 2, 4, 8, 10 × base.
        attention_blocks: bidirectional-attention blocks of the five fusion sites (encoder stages 2-4, decoder
            stages 1-2); the release has 2, 4, 8, 4, 2.
        conv_blocks: residual blocks of encoder stage 1 and of decoder stages 3 and 4 (2, 2, 2).
        map_size: the semantic maps have map_size³ tokens (4 in the release).
        fusion_depth: transformer layers fusing the maps of encoder stages 2-4 (2 in the release, width 10 × base).
        expansion: channel expansion of the MBConv feed-forward (4 in the release).
        num_tasks: task prior rows, excluding the null row (72 in the release: 71 tasks + one unused row).
        num_modalities: modality prior rows (6 in the release).
        modality_tokens: tokens per modality (10 in the release).
        size_divisor: every input side must be a multiple of this (16: patch merging needs even sides).
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        attention_blocks: Sequence[int] = (2, 4, 8, 4, 2),
        conv_blocks: Sequence[int] = (2, 2, 2),
        map_size: int = 4,
        fusion_depth: int = 2,
        expansion: int = 4,
        num_tasks: int = 72,
        num_modalities: int = 6,
        modality_tokens: int = 10,
        size_divisor: int = SIZE_DIVISOR,
    ) -> None:
        super().__init__(num_tasks, num_modalities, size_divisor)
        if len(attention_blocks) != len(FUSION_SITES) or len(conv_blocks) != 3:
            raise ValueError(
                f"attention_blocks needs 5 counts and conv_blocks 3, got {list(attention_blocks)} and "
                f"{list(conv_blocks)}"
            )
        if min(base_channels, num_tasks, num_modalities, modality_tokens, map_size, expansion) < 1:
            raise ValueError(
                "base_channels, num_tasks, num_modalities, modality_tokens, map_size and expansion must "
                "all be positive"
            )
        if size_divisor % 16:
            raise ValueError(f"size_divisor must be a multiple of 16 (four patch mergings), got {size_divisor}")
        widths = [w * base_channels for w in LEVEL_WIDTHS]

        self.stem = Stem(in_channels, widths[0])
        self.encoder = nn.ModuleList(
            [ConvDownStage(widths[0], widths[1], conv_blocks[0])]
            + [MapDownStage(widths[level - 1], widths[level], map_size**3) for level in (2, 3, 4)]
        )
        self.fusion = nn.ModuleList(
            BidirectionalFusionSite(
                widths[level] + (widths[deeper] if deeper else 0),
                widths[level],
                blocks,
                expansion,
                num_tasks,
                num_modalities,
                modality_tokens,
                last_token_output=site < len(FUSION_SITES) - 1,
            )
            for site, ((level, deeper), blocks) in enumerate(zip(FUSION_SITES, attention_blocks))
        )
        self.map_fusion = SemanticMapFusion(widths[2:5], widths[4], fusion_depth)
        self.decoder = nn.ModuleList(
            [
                MapUpStage(widths[4], widths[3]),
                MapUpStage(widths[3], widths[2]),
                DecoderStage(widths[2], widths[1], conv_blocks[1], upsampled_first=True),
                DecoderStage(widths[1], widths[0], conv_blocks[2], upsampled_first=True),
            ]
        )
        token_dim = sum(widths[level] for level, _ in FUSION_SITES)  # 34 × base
        self.task_head = PosteriorPrototypeHead(token_dim, widths[0])
        self.aux_head = PosteriorPrototypeHead(token_dim, widths[2])
        self.modality_head = ModalityHead(token_dim, num_modalities)

    def encode_context_free(self, image: torch.Tensor) -> list[torch.Tensor]:
        """What the task tokens do not reach: the stem, encoder stage 1, and stage 2's patch merging and semantic map.

        Returns ``[full-resolution skip, half-resolution skip, quarter-resolution features, their map tokens]``; a
        caller running several task contexts on one window computes this once (``forward_contexts``).
        """
        x0 = self.stem(image)
        x1 = self.encoder[0](x0)
        return [x0, x1, *self.encoder[1](x1)]

    def decode(
        self, shared: list[torch.Tensor], task_index: torch.Tensor, modality_index: torch.Tensor, auxiliary: bool
    ) -> Decoded:
        """Encoder stages 2-4 with their fusion, the map fusion and the decoder from ``encode_context_free``'s output;
        ``auxiliary``: also the prototypes applied after decoder stage 2, upsampled to full size."""
        n = task_index.shape[1]
        skips = list(shared[:2])
        x, semantic_map = shared[2], shared[3]
        maps, tokens = [], []
        for site in range(3):  # encoder stages 2-4
            if site:
                x, semantic_map = self.encoder[site + 1](x)
            x, semantic_map, priors = self.fusion[site](x, semantic_map, task_index, modality_index)
            skips.append(x)
            maps.append(semantic_map)
            tokens.append(priors)

        maps = self.map_fusion(maps)
        x, semantic_map = self.decoder[0](x, skips[3], maps[2], maps[1])
        x, semantic_map, priors = self.fusion[3](x, semantic_map, task_index, modality_index)
        tokens.append(priors)
        x, semantic_map = self.decoder[1](x, skips[2], semantic_map, maps[0])
        x, _, priors = self.fusion[4](x, semantic_map, task_index, modality_index)
        tokens.append(priors)

        posterior = torch.cat(tokens, dim=2)  # B × (n + L) × 34·base
        aux_logits = self.aux_head(x, posterior[:, :n]) if auxiliary else None
        x = self.decoder[3](self.decoder[2](x, skips[1]), skips[0])
        if aux_logits is not None:
            aux_logits = F.interpolate(aux_logits.float(), size=x.shape[2:], mode="trilinear", align_corners=True)
        return Decoded(x, posterior, aux_logits)
