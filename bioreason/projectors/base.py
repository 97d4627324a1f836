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
    """A projector of `spec`; its `output_norm` option (every projector type takes it) fixes the L2 norm of each
    output token (`Projector.rescale`). The string "embedding" is resolved to a number by `compose`, which knows the
    LLM's embeddings; a projector built before that leaves its outputs unscaled."""
    spec = normalize_spec(spec)
    options = dict(spec["options"])
    output_norm = options.pop("output_norm", None)
    projector = PROJECTORS[spec["type"]](in_dim, out_dim, **options)
    if output_norm is not None:
        projector.set_output_norm(output_norm)
    return projector


def num_output_tokens(spec: dict | str, length: int) -> int:
    spec = normalize_spec(spec)
    return PROJECTORS[spec["type"]].num_output_tokens(spec["options"], length)


class Projector(nn.Module):
    type_name: ClassVar[str] = ""
    per_position: ClassVar[bool] = True
    options: dict
    output_norm: float | str | None = None

    def set_output_norm(self, norm: float | str | None) -> None:
        """Fix every output token's L2 norm to `norm` (a number, "embedding" until `compose` resolves it, or None
        for unscaled). Why: projector alignment (CPT) doubled the projected tokens' norm, to 6.6x the LLM's own
        token embeddings, and the SFT after it then did worse than SFT alone (docs/STUDY.md); with the scale fixed,
        training can change what a token says, not how loud it is. Stored in `options`, so a reload rebuilds it."""
        if isinstance(norm, str) and norm != "embedding":
            raise ValueError(f"projector output_norm must be a number, 'embedding' or null, not {norm!r}")
        if isinstance(norm, int | float) and not norm > 0:
            raise ValueError(f"projector output_norm must be positive, not {norm}")
        self.output_norm = float(norm) if isinstance(norm, int | float) else norm
        if norm is None:
            self.options.pop("output_norm", None)
        else:
            self.options["output_norm"] = self.output_norm

    def rescale(self, features: torch.Tensor) -> torch.Tensor:
        """`features` `[..., H]` with each token scaled to `output_norm` (unchanged while it is unset or unresolved)."""
        if not isinstance(self.output_norm, float):
            return features
        norms = features.float().norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return features * (self.output_norm / norms).to(features.dtype)

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
