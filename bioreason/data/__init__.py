"""Omics files in, validated task datasets out: readers, alphabet policies, the task record, splits and the chat
format with its answer parser (see the README's "Task data" section)."""

from bioreason.data.alphabets import AlphabetPolicy, clean_sequence
from bioreason.data.build import BuildOptions, build_task
from bioreason.data.chat import (
    SYSTEM_PROMPT,
    ParsedAnswer,
    format_completion,
    modality_inputs,
    normalize_label,
    parse_answer,
    to_messages,
)
from bioreason.data.errors import BioReasonDataError
from bioreason.data.readers import read_fasta, read_h5ad, read_table
from bioreason.data.records import FEATURES, SPLITS, check_task, load_cells, rna_items

__all__ = [
    "FEATURES", "SPLITS", "SYSTEM_PROMPT", "AlphabetPolicy", "BioReasonDataError", "BuildOptions", "ParsedAnswer",
    "build_task", "check_task", "clean_sequence", "format_completion", "load_cells", "modality_inputs",
    "normalize_label", "parse_answer", "read_fasta", "read_h5ad", "read_table", "rna_items", "to_messages",
]
