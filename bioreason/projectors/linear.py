"""Per-position projectors: `linear` (one matrix) and `mlp` (LLaVA's mlpNx_gelu: N linear layers with GELU between).
One LLM token per encoder position: exact but long for DNA; use `resampler` to compress."""

from __future__ import annotations

import torch
from torch import nn

from bioreason.projectors.base import Projector, register_projector


@register_projector("linear")
class LinearProjector(Projector):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.options: dict = {}
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.proj(embeddings)


@register_projector("mlp")
class MLPProjector(Projector):
    def __init__(self, in_dim: int, out_dim: int, depth: int = 2):
        super().__init__()
        self.options = {"depth": depth}
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(embeddings)
