"""`sdpa_packed`: attention over a packed row, example by example, for devices without a varlen kernel.

A packed batch is one row whose position ids restart at 0 for every example (`bioreason.training.collator`). On GPU,
flash-attention's varlen kernel attends within each example. With plain `sdpa` (CPU), transformers builds a
block-diagonal mask over the whole row instead, so the attention of a row of n examples of length l costs (n l)^2
rather than n l^2, and packing ends up slower than padding. This attention function, registered with transformers'
`AttentionInterface`, runs causal sdpa over the example segments laid out as a batch: the same result as the
block-diagonal mask, at the cost of the examples' own lengths. Anything that is not a packed row (a batch, a KV cache,
a single example) goes to `sdpa`. bench/p4_packing.py measures packed against padded SFT with it.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "sdpa_packed"


def packed_segments(position_ids: torch.Tensor | None, length: int) -> list[tuple[int, int]] | None:
    """`[(start, end)]` of the examples of a packed row, or None when the row is not packed."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape != (1, length):
        return None
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    if len(starts) < 2 or starts[0] != 0:
        return None
    bounds = [*starts, length]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def packed_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs: Any) -> tuple[torch.Tensor, None]:
    segments = None
    if query.shape[2] == key.shape[2] and getattr(module, "is_causal", True):
        segments = packed_segments(kwargs.get("position_ids"), query.shape[2])
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kwargs.pop("is_causal", None)
    # Lay the segments out as a right-padded batch [n, heads, longest, dim]: one causal sdpa call attends within each
    # example (a query never sees the padding after it), and the outputs are gathered back into the packed order. One
    # batched call is much faster than a call per segment with CPU's flash kernel, whose cost is mostly per call.
    lengths = [end - start for start, end in segments]
    longest, n = max(lengths), len(segments)
    index = torch.cat([torch.arange(length, device=query.device) + i * longest for i, length in enumerate(lengths)])

    def to_batch(x: torch.Tensor) -> torch.Tensor:
        heads, dim = x.shape[1], x.shape[3]
        flat = x.new_zeros(n * longest, heads, dim)
        flat[index] = x[0].transpose(0, 1)
        return flat.view(n, longest, heads, dim).transpose(1, 2)

    out, _ = sdpa_attention_forward(module, to_batch(query), to_batch(key), to_batch(value), None, dropout=dropout,
                                    scaling=scaling, is_causal=True, **kwargs)
    return out.reshape(n * longest, *out.shape[2:])[index].unsqueeze(0), None  # [1, length, heads, head_dim]


AttentionInterface.register(NAME, packed_sdpa_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_packed_attention(model) -> bool:
    """Switch a BioReason model's LLM from `sdpa` to `sdpa_packed` (packing trainers call this); other
    implementations (flash-attention's varlen, eager) are left alone. Returns whether it switched."""
    bio = model.get_base_model() if hasattr(model, "get_base_model") else model
    llm = bio.model.language_model
    if llm.config._attn_implementation != "sdpa":
        return False
    llm.set_attn_implementation(NAME)
    return True
