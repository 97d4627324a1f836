"""Sequence alphabets per modality, with explicit policies for what is not plainly valid.

DNA: A C G T N. Other IUPAC codes (R Y S W K M B D H V) follow `iupac`: "error" (default), "to_n" (replace with N)
or "keep". Protein: the 20 amino acids; X U O B Z follow `ambiguous`: "keep" (default: ESM and AntiBERTy-style
vocabularies have most of them), "to_x" or "error". A single trailing `*` (stop) is stripped; an internal `*` is an
error. Lowercase (soft-masked genomes, some FASTA exports) follows `lowercase`: "upper" (default) or "error".
"""

from __future__ import annotations

from dataclasses import dataclass

from bioreason.data.errors import BioReasonDataError

DNA = set("ACGTN")
DNA_IUPAC = set("RYSWKMBDHV")
PROTEIN = set("ACDEFGHIKLMNPQRSTVWY")
PROTEIN_AMBIGUOUS = set("XUOBZ")


@dataclass(frozen=True)
class AlphabetPolicy:
    iupac: str = "error"
    ambiguous: str = "keep"
    lowercase: str = "upper"

    def __post_init__(self):
        for name, value, allowed in (("iupac", self.iupac, ("error", "to_n", "keep")),
                                     ("ambiguous", self.ambiguous, ("keep", "to_x", "error")),
                                     ("lowercase", self.lowercase, ("upper", "error"))):
            if value not in allowed:
                raise ValueError(f"{name} policy must be one of {allowed}, got {value!r}")


def clean_sequence(seq: str, modality: str, policy: AlphabetPolicy, file: str | None, record: str | int) -> str:
    """Return the sequence normalised under `policy`, or raise naming the first offending character."""
    seq = seq.strip()
    if not seq:
        raise BioReasonDataError(file, record, "empty sequence")
    if seq != seq.upper():
        if policy.lowercase == "error":
            raise BioReasonDataError(file, record, "lowercase residues (use --lowercase upper to accept them)")
        seq = seq.upper()
    if modality == "dna":
        return _apply(seq, DNA, DNA_IUPAC, policy.iupac, "N", "IUPAC ambiguity code", file, record, "--iupac")
    if modality == "protein":
        if seq.endswith("**"):  # one terminal stop is a translation's end; a run of them is not a sequence's
            stops = len(seq) - len(seq.rstrip("*"))
            raise BioReasonDataError(file, record, f"ends in {stops} stop codons '{'*' * stops}' (one terminal '*' "
                                     "is removed; a run of them is not expected)")
        if seq.endswith("*"):
            seq = seq[:-1]
        if "*" in seq:
            raise BioReasonDataError(file, record, f"internal stop codon '*' at position {seq.index('*') + 1}")
        if not seq:
            raise BioReasonDataError(file, record, "empty sequence")
        return _apply(seq, PROTEIN, PROTEIN_AMBIGUOUS, policy.ambiguous, "X", "ambiguous residue", file, record,
                      "--ambiguous")
    raise ValueError(f"sequence alphabets exist for dna and protein, not {modality!r}")


def _apply(seq, valid, soft, mode, repl, what, file, record, flag):
    out = []
    for pos, ch in enumerate(seq, 1):
        if ch in valid:
            out.append(ch)
        elif ch in soft:
            if mode == "error":
                raise BioReasonDataError(file, record, f"{what} {ch!r} at position {pos} (see {flag})")
            out.append(repl if mode in ("to_n", "to_x") else ch)
        else:
            raise BioReasonDataError(file, record, f"invalid character {ch!r} at position {pos}")
    return "".join(out)
