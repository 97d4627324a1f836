"""jaspar_tf_class (dna): the structural class of the transcription factor whose binding profile produced a site.

Each example is a 48 bp sequence (1000 bp in `jaspar_tf_class_1kb`, the long-context variant that measures token
compression: one Nucleotide Transformer token per 6 bp is ~170 positions there): a binding site sampled from a real
JASPAR 2026 CORE position-frequency matrix (pseudocount 0.5 per base), placed at a seeded random offset in uniform
random background. Five classes that exist across kingdoms. In-domain: vertebrate matrices, split into train /
validation / id_test by matrix (a matrix never straddles splits); out-of-domain: plant, fungal, insect, nematode
and urochordate matrices of the same classes.
"""

from __future__ import annotations

import os
import sqlite3

import numpy as np

from bioreason.data.benchmarks.base import package_dir, register_benchmark, split_groups
from bioreason.data.records import make_record

CLASSES = {
    "Basic helix-loop-helix factors (bHLH)": "bHLH",
    "Basic leucine zipper factors (bZIP)": "bZIP",
    "C2H2 zinc finger factors": "C2H2 zinc finger",
    "Homeo domain factors": "homeodomain",
    "Tryptophan cluster factors": "tryptophan cluster",
}
LENGTH, SITES_PER_MATRIX = 48, 2
IUPAC = {frozenset("A"): "A", frozenset("C"): "C", frozenset("G"): "G", frozenset("T"): "T",
         frozenset("AG"): "R", frozenset("CT"): "Y", frozenset("CG"): "S", frozenset("AT"): "W",
         frozenset("GT"): "K", frozenset("AC"): "M"}


def load_matrices(release: str = "JASPAR2026") -> list[dict]:
    """Latest version of every CORE matrix in CLASSES with its taxonomic group and counts [L, 4] (A, C, G, T)."""
    path = os.path.join(package_dir("pyjaspar"), "data", f"{release}.sqlite")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    query = """
        SELECT m.ID, m.BASE_ID, m.VERSION, m.NAME, c.VAL, t.VAL FROM MATRIX m
        JOIN MATRIX_ANNOTATION c ON c.ID = m.ID AND c.TAG = 'class'
        JOIN MATRIX_ANNOTATION t ON t.ID = m.ID AND t.TAG = 'tax_group'
        WHERE m.COLLECTION = 'CORE' ORDER BY m.BASE_ID, m.VERSION"""
    latest = {}
    for mid, base, version, name, cls, tax in db.execute(query):
        if cls in CLASSES:
            latest[base] = {"id": mid, "matrix": f"{base}.{version}", "name": name, "label": CLASSES[cls], "tax": tax}
    for entry in latest.values():
        counts = {}
        for row, col, val in db.execute("SELECT row, col, val FROM MATRIX_DATA WHERE ID = ?", (entry["id"],)):
            counts.setdefault(int(col), {})[row.upper()] = float(val)
        entry["counts"] = np.array([[counts[c].get(b, 0.0) for b in "ACGT"] for c in sorted(counts)])
    db.close()
    return [e for e in latest.values() if 4 <= len(e["counts"]) <= 30]


def consensus(counts: np.ndarray) -> str:
    out = []
    for col in counts / counts.sum(1, keepdims=True):
        top = frozenset("ACGT"[i] for i in np.argsort(col)[::-1][:2] if col[i] >= 0.25) if col.max() < 0.5 else None
        out.append("ACGT"[int(col.argmax())] if top is None else IUPAC.get(top, "N"))
    return "".join(out)


@register_benchmark(
    name="jaspar_tf_class",
    modality="dna",
    source="JASPAR 2026 CORE position-frequency matrices, shipped in pyjaspar 4.0.0 (pyjaspar/data/JASPAR2026.sqlite)",
    license="CC BY 4.0 (JASPAR data); pyjaspar GPL-3.0",
    split_rule="ID = vertebrate matrices, 70/10/20 train / validation / id_test by matrix; OOD = plant, fungal, "
               "insect, nematode and urochordate matrices of the same 5 classes; 2 sampled 48 bp sequences per matrix",
)
def build(out: str, seed: int) -> tuple[list[dict], dict]:
    return build_sites(out, seed, LENGTH)


@register_benchmark(
    name="jaspar_tf_class_1kb",
    modality="dna",
    source="JASPAR 2026 CORE position-frequency matrices, shipped in pyjaspar 4.0.0 (pyjaspar/data/JASPAR2026.sqlite)",
    license="CC BY 4.0 (JASPAR data); pyjaspar GPL-3.0",
    split_rule="as jaspar_tf_class, with each site placed in 1000 bp of uniform random background",
)
def build_1kb(out: str, seed: int) -> tuple[list[dict], dict]:
    return build_sites(out, seed, 1000)


def build_sites(out: str, seed: int, length: int) -> tuple[list[dict], dict]:
    matrices = load_matrices()
    labels = sorted(CLASSES.values())
    question = ("<dna>\nThis DNA sequence contains a transcription-factor binding site. Which structural class does "
                f"the binding factor belong to? Answer with one of: {', '.join(labels)}.")
    vertebrate = [m["matrix"] for m in matrices if m["tax"] == "vertebrates"]
    id_split = split_groups(vertebrate, 0.2, seed)
    rng = np.random.default_rng(seed)
    records = []
    for m in matrices:
        split = ("ood_test" if m["tax"] != "vertebrates" else id_split[m["matrix"]])
        probs = (m["counts"] + 0.5) / (m["counts"] + 0.5).sum(1, keepdims=True)
        cons = consensus(m["counts"])
        for k in range(SITES_PER_MATRIX):
            site = "".join("ACGT"[rng.choice(4, p=p)] for p in probs)
            offset = int(rng.integers(0, length - len(site) + 1))
            left = "".join(rng.choice(list("ACGT"), size=offset))
            right = "".join(rng.choice(list("ACGT"), size=length - len(site) - offset))
            why = (f"Positions {offset + 1}-{offset + len(site)} ({site}) form a {len(site)} bp site sampled from the "
                   f"{m['name']} profile ({m['matrix']}, {m['tax']}), whose consensus is {cons}.")
            records.append(make_record(f"{m['matrix']}_{k}", "jaspar_tf_class", split, "dna", [left + site + right],
                                       question, m["label"], labels, why, group=m["matrix"]))
    return records, {"matrices": len(matrices)}
