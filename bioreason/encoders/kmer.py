"""`kmer`: a DNA sequence's k-mer spectrum as one feature vector, the classical alignment-free representation
(the spectrum kernel of Leslie et al. 2002; gkm-SVM for TF binding sites).

Why it is here: no pretrained DNA encoder runs on a CPU without the model hub, and a Nucleotide Transformer trained
from scratch with the LLM gave features a linear probe could not separate on `jaspar_tf_class`, while a linear model on
3-mer frequencies could (docs/BRIDGE.md). This encoder has no weights: it hands the projector exactly the features a
biologist's first baseline reads, so the model can be judged against a probe on the same vector.

Each value is observed / expected - 1 for one k-mer, where expected is its share under uniform bases (4^-k): 0 for a
k-mer seen as often as chance, so the projector sees centred inputs of order 1 without fitted statistics. Windows that
hold an N are skipped. With `canonical`, a k-mer and its reverse complement share one entry (TF sites bind either
strand).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import torch

from bioreason.encoders.base import Encoder, Featurizer, register_encoder, require_strings

COMPLEMENT = str.maketrans("ACGT", "TGCA")


def kmer_index(k: int, canonical: bool) -> dict[str, int]:
    """k-mer -> column; with `canonical`, a k-mer and its reverse complement map to the same column."""
    kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
    if not canonical:
        return {kmer: i for i, kmer in enumerate(kmers)}
    columns: dict[str, int] = {}
    index = {}
    for kmer in kmers:
        key = min(kmer, kmer.translate(COMPLEMENT)[::-1])
        index[kmer] = columns.setdefault(key, len(columns))
    return index


class KmerFeaturizer(Featurizer):
    """DNA -> `values` [B, D] (observed / expected - 1 per k-mer column) and an all-true `mask` [B, D]."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.k = int(spec["k"])
        self.index = kmer_index(self.k, bool(spec.get("canonical", False)))
        self.width = max(self.index.values()) + 1
        # each column's share of the 4^k k-mers, what a uniform-base sequence would show (on the CPU: a model built
        # on the meta device asks for the width)
        shares = Counter(self.index.values())
        self.expected = torch.tensor([shares[c] / 4**self.k for c in range(self.width)], device="cpu")

    def __call__(self, items):
        seqs = require_strings(items, "dna")
        values = torch.zeros(len(seqs), self.width)
        for i, seq in enumerate(seqs):
            bad = set(seq) - set("ACGTN")
            if bad:
                raise ValueError(f"dna input {i}: characters {sorted(bad)} are not A, C, G, T or N")
            columns = [self.index[w] for w in (seq[s:s + self.k] for s in range(len(seq) - self.k + 1))
                       if w in self.index]
            if not columns:
                raise ValueError(f"dna input {i}: no {self.k}-mer without N in its {len(seq)} bases")
            counts = torch.bincount(torch.tensor(columns), minlength=self.width).float()
            values[i] = counts / len(columns) / self.expected - 1
        return {"values": values, "mask": torch.ones_like(values, dtype=torch.bool)}

    def output_lengths(self, mask: torch.Tensor) -> list[int]:
        return [1] * mask.shape[0]


@register_encoder("kmer")
class KmerEncoder(Encoder):
    """The k-mer spectrum as one token (no weights). Source or option `k` (3), option `canonical` (False):
    `dna=kmer`, `dna=kmer:4`."""

    featurizer_class = KmerFeaturizer
    cacheable = False  # the identity over the featurizer's spectrum: nothing to save by caching

    def __init__(self, spec: dict):
        super().__init__(spec)
        k = self.options.setdefault("k", 3)
        if not isinstance(k, int) or not 1 <= k <= 8:
            raise ValueError(f"the kmer encoder's k must be an integer from 1 to 8, got {k!r}")
        self.options.setdefault("canonical", False)

    @property
    def hidden_size(self) -> int:
        return self.featurizer_class(self.featurizer_spec()).width

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> KmerEncoder:
        if source:
            if not source.isdigit():
                raise ValueError(f"the kmer encoder's source is its k (dna=kmer:3), got {source!r}")
            options["k"] = int(source)
        return cls({"type": cls.type_name, "source": source, "options": options})

    def featurizer_spec(self) -> dict:
        return {"type": self.type_name, "k": self.options["k"], "canonical": self.options["canonical"]}

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = values.unsqueeze(1)
        return out, torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)
