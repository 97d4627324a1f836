"""Omics files in, validated task datasets out: readers, alphabet policies, the task record, splits and the chat
format with its answer parser (see the README's "Task data" section).

The names below load on first use: `bioreason data check` needs the record module, not pandas and the readers, and
starts faster for it."""

import importlib as _importlib

_EXPORTS = {
    "AlphabetPolicy": "alphabets", "clean_sequence": "alphabets",
    "BuildOptions": "build", "build_task": "build",
    "SYSTEM_PROMPT": "chat", "ParsedAnswer": "chat", "format_completion": "chat", "modality_inputs": "chat",
    "normalize_label": "chat", "parse_answer": "chat", "to_messages": "chat",
    "BioReasonDataError": "errors", "MODALITIES": "modalities",
    "read_fasta": "readers", "read_h5ad": "readers", "read_table": "readers",
    "FEATURES": "records", "SPLITS": "records", "check_task": "records", "load_cells": "records",
    "rna_items": "records",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(_importlib.import_module(f"bioreason.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'bioreason.data' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
