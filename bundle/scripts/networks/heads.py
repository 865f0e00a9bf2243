"""Output heads of Hermes: posterior task prototypes for segmentation, and modality classification."""

from __future__ import annotations

import torch
from torch import nn


class TwoLayerMLP(nn.Module):
    """Linear → GELU → Linear (hidden width = input width, as in the published heads)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, in_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PosteriorPrototypeHead(nn.Module):
    """Turns each task's posterior tokens from all fusion layers into a prototype, then scores every voxel with it.

    ``logits[b, t, voxel] = <decoder_features[b, :, voxel], prototype[b, t]>`` — one binary channel per requested task.
    """

    def __init__(self, token_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(token_dim)
        self.mlp = nn.Sequential(TwoLayerMLP(token_dim, feature_dim), TwoLayerMLP(feature_dim, feature_dim))
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, features: torch.Tensor, task_tokens: torch.Tensor) -> torch.Tensor:
        prototypes = self.mlp(self.norm(task_tokens))  # B × n × C
        b, c = features.shape[:2]
        logits = torch.bmm(prototypes.to(features.dtype), features.reshape(b, c, -1))  # B × n × voxels
        return logits.reshape(b, prototypes.shape[1], *features.shape[2:])


class ModalityHead(nn.Module):
    """Predicts the imaging modality from the posterior modality tokens (auxiliary task)."""

    def __init__(self, token_dim: int, num_modalities: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(token_dim)
        self.mlp = TwoLayerMLP(token_dim, num_modalities)

    def forward(self, modality_tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(modality_tokens).mean(dim=1))
