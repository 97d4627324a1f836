"""No held-out input in a CPT corpus. Continued pre-training is meant to teach the model to read a modality before it
sees the task; if its corpus holds an input of the task's `validation`, `id_test` or `ood_test` split, every later
score on that record measures memory, not reading. `data build` reports train inputs that also occur in a test split
(and drops them with `--drop-leaked`), so a user's train split may still hold some; a text corpus (papers, database
dumps) may quote a held-out sequence verbatim. Both CPT modes check their corpus here before training and refuse it
with the file, the record and the held-out split named.

What counts as an input: a dna / protein sequence (the task's normalised upper-case string) or an rna cell (its name
in the task's cells.h5ad). In a text corpus a held-out sequence is looked for as an exact, case-insensitive substring;
sequences shorter than `MIN_QUOTED` residues for their alphabet are not looked for (a 10-base DNA string occurs in
any long text by chance), and the check says how many it skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bioreason.data.errors import BioReasonDataError
from bioreason.data.records import MODALITY_FIELDS

HELD_OUT = ("validation", "id_test", "ood_test")
MIN_QUOTED = {"dna": 24, "protein": 10}  # shorter held-out sequences match unrelated text by chance


class CorpusLeakError(BioReasonDataError):
    """A CPT corpus holds an input of a held-out split."""


def held_out_inputs(dataset) -> dict[tuple[str, str], tuple[str, str]]:
    """`{(modality, input): (split, record id)}` over the held-out splits (the first record that holds it)."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for split in HELD_OUT:
        for row in dataset[split].select_columns(["id", *MODALITY_FIELDS]).to_list():
            for modality in MODALITY_FIELDS:
                for value in row[modality] or ():
                    found.setdefault((modality, value), (split, row["id"]))
    return found


def check_align_corpus(train: Iterable[dict], dataset, source: str) -> int:
    """Raise `CorpusLeakError` if a record CPT `align` trains on shares an input with a held-out record of
    `dataset` (`source`: the task's path, for the message); returns the number of records checked."""
    held = held_out_inputs(dataset)
    n = 0
    for row in train:
        n += 1
        for modality in MODALITY_FIELDS:
            for value in row.get(modality) or ():
                hit = held.get((modality, value))
                if hit:
                    raise CorpusLeakError(source, row["id"], f"CPT align corpus: its {modality} input is also the "
                                                             f"input of {hit[0]} record {hit[1]!r}; rebuild the task "
                                                             "with --drop-leaked")
    return n


def check_text_corpus(documents: Sequence[str], source: str, dataset) -> dict:
    """Raise `CorpusLeakError` naming `source` (a corpus file), the document's index and the held-out record if a
    document quotes a held-out dna / protein sequence; returns what was checked (`documents`, `sequences`, and
    `too_short`: held-out sequences below `MIN_QUOTED` that were not looked for)."""
    by_prefix: dict[int, dict[str, list[tuple[str, str, tuple[str, str]]]]] = {}  # prefix length -> prefix -> seqs
    wanted = too_short = 0
    for (modality, value), where in held_out_inputs(dataset).items():
        if modality not in MIN_QUOTED:
            continue  # an rna input is a cell's profile, not text a document could quote
        k = MIN_QUOTED[modality]
        if len(value) < k:
            too_short += 1
            continue
        value = value.upper()
        by_prefix.setdefault(k, {}).setdefault(value[:k], []).append((value, modality, where))
        wanted += 1
    # one pass over each document per prefix length: the cost grows with the corpus, not corpus x held-out inputs
    for index, document in enumerate(documents):
        text = document.upper()
        for k, prefixes in by_prefix.items():
            for start in range(len(text) - k + 1):
                for value, modality, (split, rid) in prefixes.get(text[start:start + k], ()):
                    if text.startswith(value, start):
                        raise CorpusLeakError(source, None, f"CPT text corpus: document {index} quotes the "
                                                            f"{modality} input of {split} record {rid!r}; remove it "
                                                            "from the corpus")
    return {"documents": len(documents), "sequences": wanted, "too_short": too_short}


__all__ = ["HELD_OUT", "MIN_QUOTED", "CorpusLeakError", "check_align_corpus", "check_text_corpus",
           "held_out_inputs"]
