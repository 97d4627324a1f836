"""Readers for the files users bring: FASTA (plain or gzipped), label CSV/TSV, tables (CSV/TSV/JSONL/Parquet) and
AnnData `.h5ad`. Every failure is a `BioReasonDataError` naming the file and record; nothing is skipped here."""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from dataclasses import dataclass

import pandas as pd

from bioreason.data.errors import BioReasonDataError


@dataclass
class FastaRecord:
    id: str
    sequence: str
    line: int  # line number of the header


def read_text_lines(path: str) -> list[str]:
    """The lines of a text file, gunzipped when it is gzip; a missing, binary, corrupt or non-UTF-8 file is a typed
    error naming it, and a byte-order mark is dropped (it made a FASTA "not a FASTA file")."""
    if not os.path.exists(path):
        raise BioReasonDataError(path, None, "file not found")
    if os.path.isdir(path):
        raise BioReasonDataError(path, None, "is a directory, not a file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as err:
        raise BioReasonDataError(path, None, f"cannot be read ({err.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:  # a bad header is OSError, a bad body zlib.error
            raise BioReasonDataError(path, None, f"corrupt gzip data ({err})") from None
    if b"\x00" in raw:
        raise BioReasonDataError(path, None, "binary data (NUL bytes): not a text file")
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is not data
    except UnicodeDecodeError as err:
        raise BioReasonDataError(path, None, f"not UTF-8 text (byte {err.start})") from None
    return text.splitlines()


def read_fasta(path: str) -> list[FastaRecord]:
    records: list[FastaRecord] = []
    seen: dict[str, int] = {}
    current: FastaRecord | None = None
    chunks: list[str] = []

    def close():
        if current is not None:
            current.sequence = "".join(chunks)
            if not current.sequence:
                raise BioReasonDataError(path, current.line, f"record {current.id!r} has an empty sequence")
            records.append(current)

    for number, line in enumerate(read_text_lines(path), 1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            close()
            header = line[1:].split()
            if not header:
                raise BioReasonDataError(path, number, "header without an id")
            rid = header[0]
            if rid in seen:
                raise BioReasonDataError(path, number, f"duplicate id {rid!r} (first seen on line {seen[rid]})")
            seen[rid] = number
            current, chunks = FastaRecord(rid, "", number), []
        elif current is None:
            raise BioReasonDataError(path, number, "sequence data before the first '>' header: not a FASTA file")
        else:
            chunks.append(line)
    close()
    if not records:
        raise BioReasonDataError(path, None, "no FASTA records")
    return records


def read_table(path: str) -> pd.DataFrame:
    """CSV / TSV (by extension, .gz allowed), JSON Lines or Parquet, every cell read as a string where text."""
    if not os.path.exists(path):
        raise BioReasonDataError(path, None, "file not found")
    name = path.lower().removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            frame = pd.read_parquet(path)
        elif name.endswith((".jsonl", ".ndjson")):
            frame = pd.read_json(io.StringIO("\n".join(read_text_lines(path))), lines=True, dtype=False)
        elif name.endswith((".csv", ".tsv", ".txt")):
            sep = "\t" if name.endswith((".tsv", ".txt")) else ","
            lines = read_text_lines(path)
            header = next(csv.reader(lines[:1], delimiter=sep), [])
            repeated = sorted({c for c in header if header.count(c) > 1})
            if repeated:  # pandas renames the second to `name.1` and the first one is used without a word
                raise BioReasonDataError(path, 1, f"column name(s) {repeated} appear more than once in the header")
            frame = pd.read_csv(io.StringIO("\n".join(lines)), sep=sep, dtype=str, keep_default_na=False)
        else:
            raise BioReasonDataError(path, None, "unknown table format: use .csv, .tsv, .jsonl or .parquet")
    except BioReasonDataError:
        raise
    except Exception as err:  # pandas / pyarrow raise many types for malformed files
        problem = " ".join(str(err).split())  # pandas' tokenizer messages end in a newline: one line here
        raise BioReasonDataError(path, None, f"cannot be parsed as a table ({type(err).__name__}: {problem})") from None
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise BioReasonDataError(path, None, "table has no rows or no columns")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def require_columns(frame: pd.DataFrame, path: str, *columns: str | None) -> None:
    for column in columns:
        if column is not None and column not in frame.columns:
            raise BioReasonDataError(path, None, f"missing column {column!r}; columns are {list(frame.columns)}")


def read_h5ad(path: str):
    """AnnData from an .h5ad file; anything anndata cannot open is reported as not an h5ad."""
    if not os.path.exists(path):
        raise BioReasonDataError(path, None, "file not found")
    import anndata

    try:
        return anndata.read_h5ad(path)
    except Exception as err:  # h5py / anndata raise OSError, KeyError, TypeError... for non-h5ad input
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise BioReasonDataError(path, None, f"not a readable .h5ad file ({type(err).__name__}: {detail})") from None
