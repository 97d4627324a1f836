"""antibody_chain (protein): heavy / kappa / lambda chain type of IMGT V-gene germline segments from ANARCI's
germline table. In-domain: human and mouse; out-of-domain: rat, rabbit, rhesus, pig, alpaca and cow germlines of the
same chain types. AntiBERTy, trained on human and mouse repertoires, can encode all of them.

The table is a Python literal in `anarci/germlines.py`; it is parsed with `ast.literal_eval`, never imported or run.
"""

from __future__ import annotations

import ast
import os

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


# IMGT unique numbering (Lefranc et al. 2003): the CDRs, and the framework positions where the chain types differ.
IMGT_CDRS = {"CDR1": (27, 38), "CDR2": (56, 65)}
IMGT_FR2_HALLMARKS = (42, 49, 50, 52)
IMGT_CONSERVED = {23: ("Cys", "C"), 41: ("Trp", "W"), 104: ("Cys", "C")}


def reasoning(aligned: str) -> str:
    """A label-free description of an IMGT-gapped V region (128 positions, `-` or `.` where a position is empty): its
    CDR1 and CDR2 with their lengths, whether position 10 is filled, the FR2 hallmark residues and the conserved
    Cys 23 / Trp 41 / Cys 104. These are what tells the chain types apart (CDR2 has 3 residues in kappa and most
    lambda chains, 6-10 in heavy; kappa fills position 10; FR2 42/49/50/52 read V G L W in most heavy chains), so
    projector alignment on them teaches the projector what the downstream question needs without naming the answer;
    the previous description (length, first residues, cysteine positions, composition) carried none of it and made the
    SFT that followed worse (docs/STUDY.md, "CPT helps")."""
    if len(aligned) < 104:
        raise ValueError(f"an IMGT-gapped V region has at least 104 positions, got {len(aligned)}")

    def at(pos: int) -> str:
        aa = aligned[pos - 1].upper()
        return "" if aa in "-." else aa

    cdrs = []
    for name, (start, end) in IMGT_CDRS.items():
        cdr = "".join(at(p) for p in range(start, end + 1))
        cdrs.append(f"{name} {cdr or 'empty'} ({len(cdr)} residues)")
    p10 = f"holds {at(10)}" if at(10) else "is empty"
    hallmarks = ", ".join(at(p) or "-" for p in IMGT_FR2_HALLMARKS)
    conserved = ", ".join(f"{name} {pos} {'present' if at(pos) == aa else 'replaced by ' + (at(pos) or 'a gap')}"
                          for pos, (name, aa) in IMGT_CONSERVED.items())
    return (f"In IMGT numbering: {' and '.join(cdrs)}; position 10 {p10}; FR2 positions "
            f"{', '.join(map(str, IMGT_FR2_HALLMARKS))} hold {hallmarks}; {conserved}.")


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
                    rows.append((f"{species}|{gene}", species, name, seq, aligned))
    id_seqs = [seq for _, species, _, seq, _ in rows if species in ID_SPECIES]
    id_split = split_groups(id_seqs, 0.2, seed)
    records = []
    for rid, species, name, seq, aligned in rows:
        split = "ood_test" if species not in ID_SPECIES else id_split[seq]
        records.append(make_record(rid, "antibody_chain", split, "protein", [seq], question, name, labels,
                                   reasoning=reasoning(aligned), group=seq))
    return records, {"source_rows": len(rows)}
