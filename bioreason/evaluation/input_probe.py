"""`input_probe`: a logistic regression on a standard featurisation of the raw input itself, fit on the train split.

Why beside the encoder probe: the encoder probe says what the frozen encoder keeps; this one says what the input
holds by the first analysis a biologist would run without any foundation model. Read together with the model:

- input probe above the encoder probe: the encoder is the bottleneck (it throws away what the input holds);
- encoder probe above the model: the bridge is (the LLM does not read what the encoder gives it).

Featurisations, one block per modality a task's records carry (items of one record averaged):
- protein: amino-acid composition (20) plus dipeptide frequencies (400);
- dna: the 4-mer spectrum (256 frequencies over A/C/G/T; other characters break k-mers);
- rna: the standard single-cell analysis fit on the train split's cells (normalise / log1p by the detected input
  scale, highly variable genes, scale, 50 PCs: `bioreason.encoders.scanpy_pca`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product

import numpy as np

from bioreason.data.chat import modality_inputs

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
DIPEPTIDES = {a + b: i for i, (a, b) in enumerate(product(AMINO_ACIDS, repeat=2))}
DNA_K = 4
KMERS = {"".join(k): i for i, k in enumerate(product("ACGT", repeat=DNA_K))}
DESCRIPTION = {"protein": "amino-acid composition + dipeptide frequencies (420)",
               "dna": f"{DNA_K}-mer spectrum ({len(KMERS)})",
               "rna": "log-normalised expression, highly variable genes, scaled, PCA (scanpy, fit on train cells)"}


def protein_features(sequence: str) -> np.ndarray:
    seq = sequence.upper()
    out = np.zeros(len(AMINO_ACIDS) + len(DIPEPTIDES), dtype=np.float32)
    residues = [AMINO_ACIDS.index(c) for c in seq if c in AMINO_ACIDS]
    if residues:
        np.add.at(out, residues, 1.0 / len(residues))
    pairs = [DIPEPTIDES[seq[i:i + 2]] for i in range(len(seq) - 1) if seq[i:i + 2] in DIPEPTIDES]
    if pairs:
        np.add.at(out, [len(AMINO_ACIDS) + p for p in pairs], 1.0 / len(pairs))
    return out


def dna_features(sequence: str) -> np.ndarray:
    seq = sequence.upper()
    out = np.zeros(len(KMERS), dtype=np.float32)
    hits = [KMERS[seq[i:i + DNA_K]] for i in range(len(seq) - DNA_K + 1) if seq[i:i + DNA_K] in KMERS]
    if hits:
        np.add.at(out, hits, 1.0 / len(hits))
    return out


class InputFeaturizer:
    """Featurises records' raw inputs; `fit` learns what needs the train split (the rna analysis)."""

    def __init__(self, cells=None, seed: int = 0):
        self.cells, self.seed = cells, seed
        self.modalities: list[str] = []
        self.rna = None

    def fit(self, train: Sequence[dict]) -> InputFeaturizer:
        present = {m for r in train for m, items in modality_inputs(r, self.cells).items() if items}
        self.modalities = [m for m in ("dna", "rna", "protein") if m in present]
        if "rna" in present:
            from bioreason.encoders.scanpy_pca import ScanpyPCAEncoder, fit_transform_tensors

            ids = list(dict.fromkeys(ref for r in train for ref in r.get("rna", [])))
            options, buffers = fit_transform_tensors(self.cells[ids], seed=self.seed, where="cells.h5ad")
            self.rna = ScanpyPCAEncoder({"type": "scanpy_pca", "options": {**options, "whiten": False}}, buffers)
        return self

    def _rows(self, modality: str, items: list) -> np.ndarray:
        """`[len(items), width]`: every item of one modality featurised in one pass."""
        if modality == "rna":
            featurizer = self.rna.featurizer_class(self.rna.featurizer_spec())
            return self.rna.transform(featurizer(items)["values"]).detach().float().numpy()
        return np.stack([(protein_features if modality == "protein" else dna_features)(s) for s in items])

    def __call__(self, records: Sequence[dict]) -> np.ndarray:
        blocks = []
        for modality in self.modalities:
            inputs = [modality_inputs(r, self.cells).get(modality, []) for r in records]
            flat = [item for items in inputs for item in items]
            rows = self._rows(modality, flat) if flat else np.zeros((0, 0), dtype=np.float32)
            block = np.zeros((len(records), rows.shape[1] if flat else 1), dtype=np.float32)
            start = 0
            for i, items in enumerate(inputs):  # a record's items averaged; none: zeros
                if items:
                    block[i] = rows[start: start + len(items)].mean(0)
                    start += len(items)
            blocks.append(block)
        return np.concatenate(blocks, axis=1)


def fit_input_probe(train: Sequence[dict], cells=None, seed: int = 0) -> tuple[Callable, dict[str, str]]:
    """(predict records -> labels, the featurisation of each modality) of a logistic regression (standardised
    features, L2, lbfgs) on `InputFeaturizer`'s features, fit on `train`."""
    from bioreason.evaluation.linear_probe import make_linear_probe

    answers = [r["answer"] for r in train]
    if len(set(answers)) < 2:
        raise ValueError(f"the input probe needs at least two labels in the train split, got {sorted(set(answers))}")
    featurize = InputFeaturizer(cells, seed=seed).fit(train)
    probe = make_linear_probe(seed)
    probe.fit(featurize(train), answers)
    return (lambda records: [str(p) for p in probe.predict(featurize(records))],
            {m: DESCRIPTION[m] for m in featurize.modalities})


__all__ = ["DESCRIPTION", "InputFeaturizer", "dna_features", "fit_input_probe", "protein_features"]
