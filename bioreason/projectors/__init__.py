"""Projectors from encoder space to the LLM's embedding space (see `bioreason.projectors.base`); importing registers
them."""

from bioreason.projectors import linear, pooling  # noqa: F401  (registration side effects)
from bioreason.projectors.base import (
    PROJECTORS,
    Projector,
    build_projector,
    normalize_spec,
    num_output_tokens,
    register_projector,
)

__all__ = ["PROJECTORS", "Projector", "build_projector", "normalize_spec", "num_output_tokens", "register_projector"]
