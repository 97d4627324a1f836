"""peptide_activity (protein): is a peptide a membrane-active host-defence peptide? In-domain: antimicrobial peptides
vs UniProt peptides (modlAMP's AMPvsUniProt); out-of-domain: anticancer peptides vs transmembrane segments
(ACP_CancPPD_vs_TM) - a different activity and a harder negative set, with the same two answers."""

from __future__ import annotations

import csv
import os

from bioreason.data.benchmarks.base import package_dir, register_benchmark, split_groups
from bioreason.data.records import make_record

LABELS = ["active", "inactive"]
QUESTION = ("<protein>\nIs this peptide a membrane-active host-defence peptide (antimicrobial or anticancer)? "
            "Answer with one of: active, inactive.")
HYDROPHOBIC = set("AILMFWVY")


def read_modlamp(name: str) -> list[tuple[str, int]]:
    """modlAMP's CSVs: a header line `n,?,negative name,positive name`, then `SEQUENCE,label` rows."""
    path = os.path.join(package_dir("modlamp"), "data", name)
    with open(path, encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return [(r[0].strip().upper(), int(r[1])) for r in rows[1:] if r and r[0].strip()]


def reasoning(seq: str) -> str:
    charge = sum(seq.count(c) for c in "KR") - sum(seq.count(c) for c in "DE")
    hydro = sum(c in HYDROPHOBIC for c in seq) / len(seq)
    return (f"The peptide has {len(seq)} residues, a net charge of {charge:+d} at neutral pH counting K/R and D/E, "
            f"and {100 * hydro:.0f}% hydrophobic residues (AILMFWVY).")


@register_benchmark(
    name="peptide_activity",
    modality="protein",
    source="modlAMP 4.3.3 data: AMPvsUniProt.csv (ID), ACP_CancPPD_vs_TM.csv (OOD)",
    license="BSD-3-Clause (modlAMP)",
    split_rule="ID = antimicrobial vs UniProt peptides, 70/10/20 train / validation / id_test by unique sequence; "
               "OOD = anticancer peptides vs transmembrane segments",
)
def build(out: str, seed: int) -> tuple[list[dict], dict]:
    records = []
    id_rows = read_modlamp("AMPvsUniProt.csv")
    ood_rows = read_modlamp("ACP_CancPPD_vs_TM.csv")
    skipped = 0
    id_split = split_groups([s for s, _ in id_rows], 0.2, seed)
    for prefix, rows, ood in (("amp", id_rows, False), ("acp", ood_rows, True)):
        for i, (seq, label) in enumerate(rows):
            if not seq or not set(seq) <= set("ACDEFGHIKLMNPQRSTVWY"):
                skipped += 1  # non-standard residues: counted, reported in the summary
                continue
            split = "ood_test" if ood else id_split[seq]
            records.append(make_record(f"{prefix}_{i}", "peptide_activity", split, "protein", [seq], QUESTION,
                                       LABELS[0] if label == 1 else LABELS[1], LABELS, reasoning(seq), group=seq))
    return records, {"skipped": {"non_standard_residues": skipped}}
