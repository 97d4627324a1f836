"""Compressing projectors.

- `resampler` (Perceiver / Flamingo style): K learned queries cross-attend to the encoder tokens (padding masked out),
  so a 1 kb sequence costs K LLM tokens instead of one per position. Default K=32.
- `mean`: masked mean over positions, then a linear map: one token per item.
"""

from __future__ import annotations

import torch
from torch import nn

from bioreason.projectors.base import Projector, register_projector


class _ResamplerBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(keys)
        queries = queries + self.attn(self.norm_q(queries), kv, kv, key_padding_mask=pad, need_weights=False)[0]
        return queries + self.ff(self.norm_ff(queries))


@register_projector("resampler")
class ResamplerProjector(Projector):
    per_position = False

    def __init__(self, in_dim: int, out_dim: int, num_queries: int = 32, depth: int = 1, heads: int | None = None,
                 width: int | None = None):
        super().__init__()
        width = width or min(out_dim, 512)
        heads = heads or max(1, width // 64)
        if width % heads:
            raise ValueError(f"resampler width {width} is not divisible by {heads} heads")
        self.options = {"num_queries": num_queries, "depth": depth, "heads": heads, "width": width}
        self.inp = nn.Linear(in_dim, width)
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.blocks = nn.ModuleList(_ResamplerBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_dim)

    @classmethod
    def num_output_tokens(cls, options: dict, length: int) -> int:
        return int(options.get("num_queries", 32))

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keys = self.inp(embeddings)
        queries = self.queries.to(keys.dtype).expand(embeddings.shape[0], -1, -1)
        pad = ~mask.bool()
        for block in self.blocks:
            queries = block(queries, keys, pad)
        return self.out(self.norm(queries))


@register_projector("mean")
class MeanPoolProjector(Projector):
    per_position = False

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.options: dict = {}
        self.proj = nn.Linear(in_dim, out_dim)

    @classmethod
    def num_output_tokens(cls, options: dict, length: int) -> int:
        return 1

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(embeddings.dtype).unsqueeze(-1)
        pooled = (embeddings * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.proj(pooled).unsqueeze(1)
