"""`bioreason data build`: a user's FASTA + labels, table or .h5ad -> a validated task dataset with honest splits.

Splits: records whose `split_column` value is in `ood_values` go to `ood_test`; the rest are split into `train`,
`validation` and `id_test` by a seeded shuffle of their groups (a group never straddles splits; by default each record
is its own group). Configs and checkpoints are chosen on `validation`; the test splits are scored for the record.
Leakage: an input identical to one in a test split is reported, and removed from `train` with `drop_leaked`.
Skips happen only through explicit policies (`max_length`, `skip_unlabeled`) and are counted in the summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bioreason.data.alphabets import AlphabetPolicy, clean_sequence
from bioreason.data.errors import BioReasonDataError
from bioreason.data.readers import read_fasta, read_h5ad, read_table, require_columns
from bioreason.data.records import (
    VALIDATION_FRACTION,
    assign_id_splits,
    make_record,
    save_task,
    summarize,
    to_dataset_dict,
)

NOUNS = {"dna": "DNA sequence", "rna": "cell", "protein": "protein"}


@dataclass
class BuildOptions:
    modality: str
    label_column: str
    out: str
    task: str = "custom"
    fasta: str | None = None
    labels: str | None = None
    table: str | None = None
    h5ad: str | None = None
    id_column: str = "id"
    sequence_column: str = "sequence"
    group_column: str | None = None
    reasoning_column: str | None = None
    question: str | None = None
    label_set: list[str] | None = None
    split_column: str | None = None
    ood_values: list[str] | None = None
    id_test_fraction: float = 0.2
    validation_fraction: float = VALIDATION_FRACTION
    seed: int = 0
    max_length: int | None = None
    skip_unlabeled: bool = False
    drop_leaked: bool = False
    use_raw: bool = False
    gene_vocab: str | None = None
    policy: AlphabetPolicy = field(default_factory=AlphabetPolicy)


@dataclass
class Raw:
    id: str
    value: str  # a sequence, or a cell id
    label: str
    where: str | int
    split_value: str | None = None
    group: str | None = None
    reasoning: str = ""
    fingerprint: str = ""
    label_at: tuple[str, str | int] | None = None  # (file, line) of the label when it came from another file


def _rows_from_frame(frame, path: str, opts: BuildOptions, id_col: str, seq_col: str | None,
                     notes: dict) -> list[Raw]:
    require_columns(frame, path, id_col, seq_col, opts.label_column, opts.split_column, opts.group_column,
                    opts.reasoning_column)
    _count_padded(frame, path, [c for c in (id_col, opts.label_column, opts.split_column, opts.group_column) if c],
                  notes)
    rows, seen = [], {}
    for i, rec in enumerate(frame.to_dict("records")):
        line = i + 2 if not path.endswith((".parquet", ".jsonl")) else i + 1
        rid = _cell(rec[id_col], path, line, id_col, numbers=True)
        if not rid:
            raise BioReasonDataError(path, line, f"empty {id_col!r}")
        if rid in seen:
            raise BioReasonDataError(path, line, f"duplicate id {rid!r} (first on line {seen[rid]})")
        seen[rid] = line
        rows.append(Raw(
            id=rid, value=_cell(rec[seq_col], path, line, seq_col) if seq_col else "",
            label=_text(rec[opts.label_column], path, line, opts.label_column), where=line,
            split_value=_text(rec[opts.split_column], path, line, opts.split_column) if opts.split_column else None,
            group=_text(rec[opts.group_column], path, line, opts.group_column) if opts.group_column else None,
            reasoning=(_text(rec[opts.reasoning_column], path, line, opts.reasoning_column)
                       if opts.reasoning_column else ""),
        ))
    return rows


def _count_padded(frame, path: str, columns: list[str], notes: dict) -> None:
    """Ids, labels, split and group values are compared as text with surrounding spaces removed ("x " and "x" are one
    label, "a " joins FASTA record "a"); how many cells of each column had them is reported, not hidden."""
    for column in columns:
        values = frame[column]
        padded = int(sum(isinstance(v, str) and v != v.strip() and v.strip() != "" for v in values))
        if padded:
            notes.setdefault("whitespace_stripped", {})[f"{os.path.basename(path)}:{column}"] = padded


# The one null policy of every table format: a JSON / Parquet null, an empty cell and these spellings in a CSV cell
# (compared without case) are a missing value. CSV is read as text, so before this "NA" became a class and a DNA
# sequence while a Parquet null was refused.
NULL_SPELLINGS = frozenset({"", "nan", "na", "n/a", "none", "null"})


def _is_null(value) -> bool:
    return (value is None or (isinstance(value, float) and np.isnan(value))
            or (isinstance(value, str) and value.strip().lower() in NULL_SPELLINGS))


def _cell(value, path: str, line: int, column: str, numbers: bool = False) -> str:
    """A required text cell. A null (`NULL_SPELLINGS`, JSON null, an empty Parquet / CSV cell) or a non-text value
    is an error naming the record: `str()` would turn it into "None" / "nan", letters both sequence alphabets
    accept."""
    if _is_null(value):
        raise BioReasonDataError(path, line, f"{column!r} is empty (null)")
    if isinstance(value, (bool, np.bool_)) or not (isinstance(value, str) or (
            numbers and isinstance(value, (int, np.integer)))):
        raise BioReasonDataError(path, line, f"{column!r} is {type(value).__name__} {_short(value)}, not text")
    return str(value).strip()


def _text(value, path: str, line: int | str, column: str) -> str:
    """An optional scalar cell as text ("" for a null); a list or mapping (a JSONL array, a Parquet list cell) is an
    error: its `str()` became an answer such as "['x', 'y']" and entered the label set."""
    if isinstance(value, (list, tuple, dict, set, np.ndarray)):
        raise BioReasonDataError(path, line, f"{column!r} is a {type(value).__name__} {_short(value)}, not one value")
    if _is_null(value):
        return ""
    return str(value).strip()


def _short(value) -> str:
    """A value for a one-line message: its repr, on one line and at most 60 characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def read_inputs(opts: BuildOptions, notes: dict):
    """Raw records from exactly one input form; returns (raws, source_file, cells AnnData or None)."""
    given = [x for x in (opts.fasta, opts.table, opts.h5ad) if x]
    if len(given) != 1:
        raise BioReasonDataError(None, None, "give exactly one of --fasta (with --labels), --table or --h5ad")
    if opts.fasta:
        if opts.modality == "rna":
            raise BioReasonDataError(opts.fasta, None, "rna tasks read cells from --h5ad, not FASTA")
        if not opts.labels:
            raise BioReasonDataError(opts.fasta, None, "--fasta needs --labels CSV joined on --id-column")
        records = read_fasta(opts.fasta)
        frame = read_table(opts.labels)
        require_columns(frame, opts.labels, opts.id_column)
        labelled = {r.id: r for r in _rows_from_frame(frame, opts.labels, opts, opts.id_column, None, notes)}
        fasta_ids = {r.id for r in records}
        unlabeled = [r for r in records if r.id not in labelled]
        orphans = [i for i in labelled if i not in fasta_ids]
        notes["labels_without_sequence"] = len(orphans)
        if unlabeled and not opts.skip_unlabeled:
            raise BioReasonDataError(opts.fasta, unlabeled[0].id, f"{len(unlabeled)} sequences have no label in "
                                     f"{opts.labels} (e.g. {[r.id for r in unlabeled[:3]]}); use --skip-unlabeled")
        notes.setdefault("skipped", {})["no_label"] = len(unlabeled)
        raws = []
        for rec in records:
            if rec.id in labelled:
                lab = labelled[rec.id]
                raws.append(Raw(rec.id, rec.sequence, lab.label, rec.id, lab.split_value, lab.group, lab.reasoning,
                                label_at=(opts.labels, lab.where)))
        return raws, opts.fasta, None
    if opts.table:
        frame = read_table(opts.table)
        if opts.modality == "rna":
            return _read_cells(opts, notes, opts.table, _table_to_anndata(frame, opts))
        return _rows_from_frame(frame, opts.table, opts, opts.id_column, opts.sequence_column,
                                notes), opts.table, None
    if opts.modality != "rna":
        raise BioReasonDataError(opts.h5ad, None, "--h5ad inputs are rna (transcriptomic) tasks: use --modality rna")
    return _read_cells(opts, notes, opts.h5ad, read_h5ad(opts.h5ad))


def _table_to_anndata(frame, opts: BuildOptions):
    """A wide expression table (one row per cell: the id, label and split columns, then one column per gene)."""
    import anndata
    import pandas as pd

    require_columns(frame, opts.table, opts.id_column, opts.label_column)
    meta = [c for c in (opts.id_column, opts.label_column, opts.split_column, opts.group_column,
                        opts.reasoning_column) if c]
    genes = [c for c in frame.columns if c not in meta]
    if not genes:
        raise BioReasonDataError(opts.table, None, "no gene columns besides the id / label / split columns")
    values = frame[genes].apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & (frame[genes].astype(str).apply(lambda col: col.str.strip()) != "nan")
    if bad.to_numpy().any():
        row, col = (int(x) for x in np.argwhere(bad.to_numpy())[0])
        raise BioReasonDataError(opts.table, row + 2, f"gene column {genes[col]!r} holds a non-number "
                                                       f"{frame[genes[col]].iloc[row]!r}")
    ids = frame[opts.id_column].astype(str)
    if ids.duplicated().any():
        raise BioReasonDataError(opts.table, f"{ids[ids.duplicated()].iloc[0]}", "duplicate cell id")
    obs = frame[meta].astype(str).set_index(ids.to_numpy())
    return anndata.AnnData(values.to_numpy(dtype=np.float32), obs=obs, var=pd.DataFrame(index=genes))


def _read_cells(opts: BuildOptions, notes: dict, path: str, adata):
    obs = adata.obs
    for column in (opts.label_column, opts.split_column, opts.group_column, opts.reasoning_column):
        if column and column not in obs.columns:
            raise BioReasonDataError(path, None, f"missing obs column {column!r}; obs columns are {list(obs.columns)}")
    if opts.use_raw:
        if adata.raw is None:
            raise BioReasonDataError(path, None, "--use-raw given but the file has no .raw")
        adata = adata.raw.to_adata()
        adata.obs = obs
    if adata.n_vars == 0:
        raise BioReasonDataError(path, None, "the expression matrix has no genes (0 columns)")
    if adata.n_obs == 0:
        raise BioReasonDataError(path, None, "the expression matrix has no cells (0 rows)")
    matrix = adata.X
    dense = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    bad = ~np.isfinite(dense)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise BioReasonDataError(path, str(adata.obs_names[row]), "expression contains NaN or inf")
    if (dense < 0).any():
        row = int(np.argwhere(dense < 0)[0][0])
        raise BioReasonDataError(path, str(adata.obs_names[row]),
                                 "negative expression values (scaled data? use --use-raw for the .raw counts)")
    from bioreason.data.expression import DESCRIPTION, detect_scale

    scale = detect_scale(dense)
    notes["input_scale"] = {"scale": scale, "meaning": DESCRIPTION[scale]}
    if opts.gene_vocab:
        vocab = _read_gene_vocab(opts.gene_vocab)
        genes = [str(g) for g in adata.var_names]
        overlap = sum(g in vocab for g in genes)
        notes["gene_vocab_overlap"] = {"genes": len(genes), "in_vocab": overlap, "vocab": len(vocab)}
        if overlap == 0:
            kind = "Ensembl ids" if genes[0].startswith("ENS") else "gene symbols"
            raise BioReasonDataError(path, None, f"none of the {len(genes)} genes ({kind}, e.g. {genes[:3]}) are in "
                                     f"the gene vocabulary {opts.gene_vocab} (e.g. {sorted(vocab)[:3]})")
    raws = []
    for i, (cell, rec) in enumerate(adata.obs.iterrows()):
        def text(column, rec=rec, cell=cell):
            return _text(rec[column], path, str(cell), column)

        raws.append(Raw(
            id=str(cell), value=str(cell), label=text(opts.label_column), where=str(cell),
            split_value=text(opts.split_column) if opts.split_column else None,
            group=text(opts.group_column) if opts.group_column else None,
            reasoning=text(opts.reasoning_column) if opts.reasoning_column else "",
            fingerprint=hashlib.sha1(np.ascontiguousarray(dense[i]).tobytes()).hexdigest(),
        ))
    adata.X = dense.astype(np.float32)
    return raws, path, adata


def _read_gene_vocab(path: str) -> set[str]:
    """Gene ids, one per line (first word), or a JSON list / dict of them; anything else is a typed error naming the
    file (a binary file read as text gave an unnamed UnicodeDecodeError)."""
    from bioreason.data.readers import read_text_lines

    lines = read_text_lines(path)  # typed errors for a missing, binary, gzip-corrupt or non-UTF-8 file
    if path.endswith(".json"):
        try:
            data = json.loads("\n".join(lines))
        except json.JSONDecodeError as err:
            raise BioReasonDataError(path, err.lineno, f"--gene-vocab: not valid JSON ({err.msg})") from None
        if not isinstance(data, (dict, list)):
            raise BioReasonDataError(path, None, "--gene-vocab: JSON must be a list or an object of gene ids")
        return {str(g) for g in data}
    vocab = {line.strip().split()[0] for line in lines if line.strip()}
    if not vocab:
        raise BioReasonDataError(path, None, "--gene-vocab: no gene ids in the file")
    return vocab


def split_records(raws: list[Raw], opts: BuildOptions, source: str, notes: dict) -> dict[str, str]:
    """id -> split name."""
    assignment: dict[str, str] = {}
    if opts.split_column:
        if not opts.ood_values:
            raise BioReasonDataError(source, None, "--split-column needs --ood-values v1,v2")
        present = Counter(r.split_value for r in raws)
        unknown = [v for v in opts.ood_values if v not in present]
        if unknown:
            raise BioReasonDataError(source, None, f"--ood-values {unknown} match no record of {opts.split_column!r}; "
                                     f"values are {sorted(v for v in present if v)[:20]}")
        for r in raws:
            if r.split_value in opts.ood_values:
                assignment[r.id] = "ood_test"
    else:
        notes["ood_test"] = "empty: no --split-column / --ood-values given"
    rest = [r for r in raws if r.id not in assignment]
    if not rest:
        raise BioReasonDataError(source, None, f"every record has an --ood-values value of {opts.split_column!r}: "
                                 "nothing is left for train, validation and id_test")
    id_split = assign_id_splits([r.group or r.id for r in rest], opts.id_test_fraction, opts.validation_fraction,
                                opts.seed)
    for r in rest:
        assignment[r.id] = id_split[r.group or r.id]
    return assignment


def check_fractions(opts: BuildOptions) -> None:
    """`--id-test-fraction` and `--validation-fraction` are shares of the in-domain groups: each in [0, 1), together
    below 1 so that train keeps some."""
    for name, value in (("--id-test-fraction", opts.id_test_fraction),
                        ("--validation-fraction", opts.validation_fraction)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and 0 <= value < 1):
            raise BioReasonDataError(None, None, f"{name} must be a number in [0, 1), got {value!r}")
    if opts.id_test_fraction + opts.validation_fraction >= 1:
        raise BioReasonDataError(None, None, f"--id-test-fraction {opts.id_test_fraction} + --validation-fraction "
                                             f"{opts.validation_fraction} leave no in-domain groups for train")


def check_options(opts: BuildOptions) -> None:
    """Option values checked before any file is read: `--max-length 0` ended in "no records left", `--ood-values`
    without `--split-column` was ignored while the summary said none were given, an `--out` that is a file and a
    missing `--gene-vocab` gave an untyped OS error."""
    def refuse(problem: str):
        raise BioReasonDataError("data build", None, problem)

    check_fractions(opts)
    if opts.max_length is not None and opts.max_length < 1:
        refuse(f"--max-length must be at least 1, not {opts.max_length}")
    if opts.ood_values and not opts.split_column:
        refuse("--ood-values names values of --split-column, which is not given")
    if os.path.isfile(opts.out):
        refuse(f"--out {opts.out} is a file; it must be a folder (new, or a dataset to replace)")
    if opts.gene_vocab is not None and not os.path.isfile(opts.gene_vocab):
        raise BioReasonDataError(opts.gene_vocab, None, "--gene-vocab: no such file")


def column_phrase(label_column: str) -> tuple[str, bool]:
    """A column name as words for a question, and whether it reads as plural: `cell_type` / `cellType` -> "cell type",
    `TF_family` -> "TF family" (acronyms kept), `Hours` -> "hours" (plural)."""
    words = [w for part in re.split(r"[\s_\-/]+", label_column) for w in re.split(r"(?<=[a-z])(?=[A-Z])", part) if w]
    words = [w if sum(c.isupper() for c in w) > 1 else w.lower() for w in words] or [label_column]
    last = words[-1]
    plural = last.endswith("s") and not last.endswith(("ss", "us", "is")) and not last.isupper() and len(last) > 3
    return " ".join(words), plural


def default_question(modality: str, label_column: str, label_set: list[str]) -> str:
    phrase, plural = column_phrase(label_column)
    return (f"<{modality}>\nWhat {'are' if plural else 'is'} the {phrase} of this {NOUNS[modality]}? "
            f"Answer with one of: {', '.join(label_set)}.")


def render_question(template: str | None, modality: str, label_column: str, label_set: list[str]) -> str:
    if template is None:
        return default_question(modality, label_column, label_set)
    others = [m for m in NOUNS if m != modality and f"<{m}>" in template]
    if others:
        raise BioReasonDataError(None, None, f"--question marks <{others[0]}> but the task's modality is {modality}: "
                                 f"use <{modality}>")
    text = template.replace("{labels}", ", ".join(label_set))
    marks = text.count(f"<{modality}>")
    if marks > 1:  # data check refused what build wrote: each record has one input
        raise BioReasonDataError(None, None, f"--question marks <{modality}> {marks} times, but each record has one "
                                 f"{modality} input: mark it once")
    return text if marks else f"<{modality}>\n{text}"


def build_task(opts: BuildOptions) -> dict:
    """Build, validate and save; returns the summary."""
    if opts.modality not in NOUNS:
        raise BioReasonDataError(None, None, f"--modality must be one of {sorted(NOUNS)}")
    check_options(opts)
    notes: dict = {"task": opts.task, "modality": opts.modality, "skipped": {}}
    raws, source, cells = read_inputs(opts, notes)
    notes["source"] = os.path.basename(source)

    kept = []
    for r in raws:
        if not r.label:
            if opts.skip_unlabeled:
                notes["skipped"]["no_label"] = notes["skipped"].get("no_label", 0) + 1
                continue
            file, where = r.label_at or (source, r.where)
            named = isinstance(where, str)  # a record named by its id already: do not name it twice
            raise BioReasonDataError(file, where, f"{'' if named else f'record {r.id!r} has '}an empty "
                                     f"{opts.label_column!r}" + (" label" if named else ""))
        if opts.modality != "rna":
            r.value = clean_sequence(r.value, opts.modality, opts.policy, source, r.where)
            r.fingerprint = r.value
            if opts.max_length is not None and len(r.value) > opts.max_length:
                key = f"longer_than_{opts.max_length}"
                notes["skipped"][key] = notes["skipped"].get(key, 0) + 1
                continue
        kept.append(r)
    if not kept:
        raise BioReasonDataError(source, None, "no records left to build a task from")

    label_set = opts.label_set or sorted({r.label for r in kept})
    allowed = set(label_set)
    for r in kept:
        if r.label not in allowed:
            raise BioReasonDataError(*(r.label_at or (source, r.where)),
                                     f"label {r.label!r} of {r.id!r} is not in the label set {label_set}")

    assignment = split_records(kept, opts, source, notes)
    test_prints = {r.fingerprint for r in kept if assignment[r.id] != "train"}
    leaked = [r for r in kept if assignment[r.id] == "train" and r.fingerprint in test_prints]
    notes["leakage"] = {"train_inputs_also_in_test": len(leaked), "dropped_from_train": bool(opts.drop_leaked)}
    if opts.drop_leaked:
        notes["skipped"]["leaked_into_test"] = len(leaked)
        kept = [r for r in kept if r not in leaked]

    question = render_question(opts.question, opts.modality, opts.label_column, label_set)
    records = [
        make_record(r.id, opts.task, assignment[r.id], opts.modality, [r.value], question, r.label, label_set,
                    reasoning=r.reasoning, group=r.group or r.id)
        for r in kept
    ]
    dataset = to_dataset_dict(records)
    summary = summarize(dataset, notes)
    save_task(dataset, opts.out, summary)
    if cells is not None:
        cells[[r.id for r in kept]].copy().write_h5ad(  # a copy: writing a view made anndata warn
            os.path.join(opts.out, "cells.h5ad"))
    return summary
