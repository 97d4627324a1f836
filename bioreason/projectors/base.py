"""The projector interface and registry: encoder embeddings `[B, L, D]` + mask -> LLM-space features `[B, N, H]`.

`num_output_tokens(options, L)` is a classmethod so the processor can size a placeholder run from the spec alone,
before any weights exist. Per-position projectors emit one token per valid encoder position (N = L, varying per item);
pooling projectors emit a fixed number (the resampler's K queries, mean pooling's 1).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

PROJECTORS: dict[str, type[Projector]] = {}
_MLP_ALIAS = re.compile(r"^mlp(\d+)x_gelu$")


def register_projector(name: str) -> Callable[[type[Projector]], type[Projector]]:
    def wrap(cls: type[Projector]) -> type[Projector]:
        cls.type_name = name
        PROJECTORS[name] = cls
        return cls

    return wrap


def normalize_spec(spec: dict | str) -> dict:
    """Accept `"resampler"`, LLaVA-style `"mlp2x_gelu"` or a full `{"type", "options"}` dict."""
    spec = {"type": spec} if isinstance(spec, str) else copy.deepcopy(spec)
    spec.setdefault("options", {})
    alias = _MLP_ALIAS.match(spec["type"])
    if alias:
        spec["type"] = "mlp"
        spec["options"].setdefault("depth", int(alias.group(1)))
    if spec["type"] not in PROJECTORS:
        raise ValueError(f"Unknown projector {spec['type']!r}; available: {sorted(PROJECTORS)} (or mlpNx_gelu)")
    return spec


def build_projector(spec: dict | str, in_dim: int, out_dim: int) -> Projector:
    spec = normalize_spec(spec)
    return PROJECTORS[spec["type"]](in_dim, out_dim, **spec["options"])


def num_output_tokens(spec: dict | str, length: int) -> int:
    spec = normalize_spec(spec)
    return PROJECTORS[spec["type"]].num_output_tokens(spec["options"], length)


class Projector(nn.Module):
    type_name: ClassVar[str] = ""
    per_position: ClassVar[bool] = True

    @classmethod
    def num_output_tokens(cls, options: dict, length: int) -> int:
        return length

    def output_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Which of the `[B, N]` outputs are real features (the rest are padding and are not scattered)."""
        if self.per_position:
            return mask
        n = self.num_output_tokens(self.options, mask.shape[1])
        return torch.ones(mask.shape[0], n, dtype=torch.bool, device=mask.device)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
