"""antibody_chain (protein): heavy / kappa / lambda chain type of IMGT V-gene germline segments from ANARCI's
germline table. In-domain: human and mouse; out-of-domain: rat, rabbit, rhesus, pig, alpaca and cow germlines of the
same chain types. AntiBERTy, trained on human and mouse repertoires, can encode all of them.

The table is a Python literal in `anarci/germlines.py`; it is parsed with `ast.literal_eval`, never imported or run.
"""

from __future__ import annotations

import ast
import os
from collections import Counter

from bioreason.data.benchmarks.base import package_dir, register_benchmark, split_groups
from bioreason.data.records import make_record

CHAINS = {"H": "heavy", "K": "kappa", "L": "lambda"}
ID_SPECIES = ("human", "mouse")
QUESTION = "<protein>\nThis is an antibody variable-region sequence. Which chain type is it? Answer with one of: {}."


def load_germlines() -> dict:
    path = os.path.join(package_dir("anarci"), "germlines.py")
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "all_germlines":
            return ast.literal_eval(node.value)
    raise ValueError(f"{path}: no all_germlines table")


def reasoning(seq: str) -> str:
    cys = [i + 1 for i, c in enumerate(seq) if c == "C"]
    top = ", ".join(f"{aa} {100 * n / len(seq):.0f}%" for aa, n in Counter(seq).most_common(3))
    return (f"The sequence has {len(seq)} residues and begins with {seq[:6]}. Cysteines sit at positions "
            f"{', '.join(map(str, cys)) or 'none'}. Its most frequent residues are {top}.")


@register_benchmark(
    name="antibody_chain",
    modality="protein",
    source="ANARCI 2026.2.13.2 germline table (IMGT V genes), anarci/germlines.py",
    license="BSD-3-Clause (ANARCI); germline sequences from IMGT",
    split_rule="ID = human + mouse V genes, split 70/10/20 into train / validation / id_test by unique sequence; "
               "OOD = rat, rabbit, rhesus, pig, alpaca and cow V genes (ood_test)",
)
def build(out: str, seed: int) -> tuple[list[dict], dict]:
    table = load_germlines()["V"]
    labels = sorted(CHAINS.values())
    question = QUESTION.format(", ".join(labels))
    rows = []
    for chain, name in CHAINS.items():
        for species, genes in table[chain].items():
            for gene, aligned in genes.items():
                seq = aligned.replace("-", "").replace(".", "").upper()
                if len(seq) >= 60 and set(seq) <= set("ACDEFGHIKLMNPQRSTVWYX"):
                    rows.append((f"{species}|{gene}", species, name, seq))
    id_seqs = [seq for _, species, _, seq in rows if species in ID_SPECIES]
    id_split = split_groups(id_seqs, 0.2, seed)
    records = []
    for rid, species, name, seq in rows:
        split = "ood_test" if species not in ID_SPECIES else id_split[seq]
        records.append(make_record(rid, "antibody_chain", split, "protein", [seq], question, name, labels,
                                   reasoning=reasoning(seq), group=seq))
    return records, {"source_rows": len(rows)}
