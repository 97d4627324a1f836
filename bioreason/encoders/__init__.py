"""Biological foundation-model encoders behind one interface (see `bioreason.encoders.base`); importing registers
them all."""

from bioreason.encoders import dna, kmer, protein, rna, scanpy_pca  # noqa: F401  (registration side effects)
from bioreason.encoders.base import (
    ENCODERS,
    Encoder,
    Featurizer,
    build_encoder,
    build_featurizer,
    load_encoder,
    register_encoder,
)

__all__ = ["ENCODERS", "Encoder", "Featurizer", "build_encoder", "build_featurizer", "load_encoder", "register_encoder"]
