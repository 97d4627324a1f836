"""A generated corpus of malformed inputs through `bioreason data build`, as a user meets it: FASTA, label tables,
CSV / TSV / JSON Lines / Parquet tables, AnnData, option values. Every case must end with exit status 1 and one line
`bioreason: data error: ...` naming the file it is about (or the option), never a traceback, never a dataset written;
the valid controls next to them must build. Cases are built from valid inputs by one mutation each, so a failure
names the mutation."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable

import anndata
import numpy as np
import pandas as pd
import pytest

PROTEINS = ["MKTAYIAKQR", "GSHMLEDPVR", "MVLSPADKTN", "MKWVTFISLL", "MALWMRLLPL", "MKVLAAGIVG", "MSDNELQKAL",
            "MTEYKLVVVG"]
DNA = ["ACGTACGTAA", "TTGACCATGC", "GGCATTACGA", "CATGCATGCA", "ATATCGCGTA", "CCGGTTAACC", "GATTACAGAT",
       "TGCATGCAAT"]
LABELS = ["globin", "kinase"]

# a case: name -> (make(tmp) -> (argv without --out, the file or option the message must name))
Case = Callable[[str], tuple[list[str], str]]


def put(path: str, data: str | bytes) -> str:
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return path


def fasta(seqs: list[str]) -> str:
    return "".join(f">s{i} description\n{s}\n" for i, s in enumerate(seqs))


def labels(n: int = 8, extra: str = "") -> str:
    return "id,family,source\n" + "".join(f"s{i},{LABELS[i % 2]},{'lab' if i < n - 2 else 'zoo'}\n"
                                          for i in range(n)) + extra


def fasta_case(text: str | bytes, modality: str = "protein", name: str = "in.fa", *options: str) -> Case:
    def make(tmp: str):
        path = put(os.path.join(tmp, name), text)
        return ["--modality", modality, "--fasta", path, "--labels", put(os.path.join(tmp, "l.csv"), labels()),
                "--label-column", "family", *options], path
    return make


def labels_case(text: str | bytes, *options: str) -> Case:
    def make(tmp: str):
        path = put(os.path.join(tmp, "labels.csv"), text)
        return ["--modality", "protein", "--fasta", put(os.path.join(tmp, "in.fa"), fasta(PROTEINS)), "--labels",
                path, "--label-column", "family", *options], path
    return make


def table_rows() -> list[dict]:
    return [{"id": f"s{i}", "sequence": s, "family": LABELS[i % 2]} for i, s in enumerate(PROTEINS)]


def write_rows(path: str, rows: list[dict]) -> str:
    if path.endswith(".jsonl"):
        return put(path, "".join(json.dumps(r) + "\n" for r in rows))
    if path.endswith(".parquet"):
        pd.DataFrame(rows).to_parquet(path)
        return path
    pd.DataFrame(rows).to_csv(path, index=False, sep="\t" if path.endswith(".tsv") else ",")
    return path


def table_case(fmt: str, mutate: Callable[[list[dict]], list[dict]] | None = None, raw: bytes | None = None,
               *options: str) -> Case:
    def make(tmp: str):
        path = os.path.join(tmp, f"t.{fmt}")
        put(path, raw) if raw is not None else write_rows(path, mutate(table_rows()))
        return ["--modality", "protein", "--table", path, "--label-column", "family", *options], path
    return make


def h5ad_case(x: np.ndarray | None = None, obs: dict | None = None, raw_bytes: bytes | None = None,
              *options: str) -> Case:
    def make(tmp: str):
        path = os.path.join(tmp, "c.h5ad")
        if raw_bytes is not None:
            put(path, raw_bytes)
        else:
            values = np.random.default_rng(0).poisson(2, (10, 6)).astype(np.float32) if x is None else x
            frame = pd.DataFrame({"cell_type": ["T", "B"] * (len(values) // 2), "donor": ["d1", "d2"] * (
                len(values) // 2), **(obs or {})}, index=[f"cell{i}" for i in range(len(values))])
            anndata.AnnData(values, obs=frame, var=pd.DataFrame(index=[f"G{i}" for i in range(values.shape[1])])
                            ).write_h5ad(path)
        return ["--modality", "rna", "--h5ad", path, "--label-column", "cell_type", *options], path
    return make


def option_case(*options: str, named: str) -> Case:
    def make(tmp: str):
        argv, _ = fasta_case(fasta(PROTEINS))(tmp)
        return [*argv, *options], named
    return make


def good_h5ad_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        h5ad_case()(tmp)
        with open(os.path.join(tmp, "c.h5ad"), "rb") as fh:
            return fh.read()


def malformed() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    good = fasta(PROTEINS)
    packed = gzip.compress(good.encode())
    # FASTA: structure, encoding, compression
    for name, text in {"empty file": "", "only spaces": "   \n\n", "sequence before header": "MKT\n" + good,
                       "header without id": ">\nMKTAYIAKQR\n" + good, "empty record": ">s9\n" + good,
                       "empty last record": good + ">s9\n", "duplicate id": good + ">s0\nMKTAYIAKQR\n",
                       "NUL bytes": good + "\x00", "Latin-1 byte": None, "binary": None}.items():
        if name == "Latin-1 byte":
            text = good.encode() + b">s9 caf\xe9\nMKT\n"
        elif name == "binary":
            text = bytes(range(256)) * 8
        cases[f"fasta: {name}"] = fasta_case(text)
    for name, data in {"gzip truncated": packed[: len(packed) // 2], "gzip header only": packed[:10],
                       "gzip corrupt body": packed[:20] + b"\x00garbage" * 5 + packed[-8:],
                       "gzip of binary": gzip.compress(bytes(range(256)) * 4),
                       "gzip of nothing": gzip.compress(b"")}.items():
        cases[f"fasta: {name}"] = fasta_case(data, "protein", "in.fa.gz")
    # protein residues: every position x characters no policy accepts
    for position in (0, 4, 9):
        for char in "0123456789!@#$%&=+?;:,'\"~|":
            seqs = list(PROTEINS)
            seqs[3] = seqs[3][:position] + char + seqs[3][position + 1:]
            cases[f"protein: {char!r} at {position}"] = fasta_case(fasta(seqs))
    for seq in ("MKT*AYIAKQ", "*MKTAYIAKQ", "MKTAYIAKQ**", "MKTAYIAKQ***"):
        cases[f"protein: stops {seq}"] = fasta_case(fasta([*PROTEINS[:3], seq, *PROTEINS[4:]]))
    cases["protein: lowercase refused"] = fasta_case(fasta([*PROTEINS[:7], "mteyklvvvg"]), "protein", "in.fa",
                                                     "--lowercase", "error")
    cases["protein: ambiguous refused"] = fasta_case(fasta([*PROTEINS[:7], "MTEYKLBVVG"]), "protein", "in.fa",
                                                     "--ambiguous", "error")
    # DNA: IUPAC codes under the default (error) and characters no policy accepts
    for char in "RYKMSWBDHV":
        cases[f"dna: IUPAC {char}"] = fasta_case(fasta([*DNA[:5], DNA[5][:4] + char + DNA[5][5:], *DNA[6:]]), "dna")
    for char in "EFIJLOPQUXZ0123*-.!":
        cases[f"dna: {char!r}"] = fasta_case(fasta([*DNA[:5], DNA[5][:4] + char + DNA[5][5:], *DNA[6:]]), "dna",
                                             "in.fa", "--iupac", "to_n")
    # label tables joined to the FASTA
    for name, text in {"missing label column": labels().replace("family", "fam"),
                       "missing id column": labels().replace("id,", "name,", 1),
                       "duplicate id": labels(extra="s0,kinase,lab\n"), "empty id": labels(extra=",kinase,lab\n"),
                       "repeated column": labels().replace("source", "family", 1),
                       "ragged row": labels(extra="s8,kinase,lab,extra,more\n"),
                       "a sequence without label": labels(7), "empty file": "", "header only": "id,family\n",
                       "binary": bytes(range(256)), "Latin-1": labels().encode() + b"s9,caf\xe9,lab\n"}.items():
        cases[f"labels: {name}"] = labels_case(text)
    for cell in ("", "NA", "NaN", "nan", "None", "null", "N/A", "n/a", "NULL", "  "):
        cases[f"labels: null label {cell!r}"] = labels_case(labels().replace("s3,kinase", f"s3,{cell}", 1))
    cases["labels: outside --label-set"] = labels_case(labels(), "--label-set", "globin,other")
    # sequence tables in every format
    for fmt in ("csv", "tsv", "jsonl", "parquet"):
        def drop(column):
            return lambda rows: [{k: v for k, v in r.items() if k != column} for r in rows]

        def cell_is(column, value, row=2):
            return lambda rows: [({**r, column: value} if i == row else r) for i, r in enumerate(rows)]

        mutations = {"no sequence column": drop("sequence"), "no label column": drop("family"),
                     "no id column": drop("id"), "duplicate id": cell_is("id", "s0"),
                     "bad residue": cell_is("sequence", "MKT1AYIAKQ"), "empty sequence": cell_is("sequence", ""),
                     "null sequence": cell_is("sequence", None), "null id": cell_is("id", None),
                     "null label": cell_is("family", None), "no rows": lambda rows: rows[:0]}
        if fmt in ("jsonl", "parquet"):  # typed cells only these formats can hold (a Parquet column has one type)
            row = 2 if fmt == "jsonl" else None

            def typed(column, value, row=row):
                return lambda rows: [({**r, column: value} if row in (None, i) else r) for i, r in enumerate(rows)]

            mutations |= {"list label": typed("family", ["x", "y"]), "numeric sequence": typed("sequence", 7),
                          "boolean sequence": typed("sequence", True)}
        for name, mutate in mutations.items():
            cases[f"table {fmt}: {name}"] = table_case(fmt, mutate)
        for name, data in {"binary": bytes(range(256)) * 4, "empty": b"", "truncated": b"PAR1\x00\x01"}.items():
            cases[f"table {fmt}: {name} file"] = table_case(fmt, None, data)
    cases["table jsonl: broken JSON line"] = table_case("jsonl", None, b'{"id": "s0", "sequence": "MKT"\n')
    cases["table jsonl: an array line"] = table_case("jsonl", None, b'["s0", "MKT", "globin"]\n')
    # AnnData
    good_h5ad = good_h5ad_bytes()
    x = np.random.default_rng(0).poisson(2, (10, 6)).astype(np.float32)
    for name, bad in {"NaN": np.nan, "inf": np.inf, "-inf": -np.inf, "negative": -1.0}.items():
        for row in (0, 9):
            values = x.copy()
            values[row, 3] = bad
            cases[f"anndata: {name} in cell {row}"] = h5ad_case(values)
    cases["anndata: no genes"] = h5ad_case(np.zeros((10, 0), np.float32))
    cases["anndata: not hdf5"] = h5ad_case(None, None, b"not an h5ad file\n")
    cases["anndata: truncated"] = h5ad_case(None, None, good_h5ad[: len(good_h5ad) // 2])
    cases["anndata: empty file"] = h5ad_case(None, None, b"")
    cases["anndata: empty label"] = h5ad_case(None, {"cell_type": ["T", "B", "", "B", "T", "B", "T", "B", "T", "B"]})
    cases["anndata: missing obs column"] = h5ad_case(None, None, None, "--split-column", "tissue", "--ood-values",
                                                     "x")
    cases["anndata: --use-raw without raw"] = h5ad_case(None, None, None, "--use-raw")
    cases["anndata: every cell OOD"] = h5ad_case(None, None, None, "--split-column", "donor", "--ood-values",
                                                 "d1,d2")
    cases["anndata: --ood-values match nothing"] = h5ad_case(None, None, None, "--split-column", "donor",
                                                             "--ood-values", "d9")
    # option values
    for flag in ("--id-test-fraction", "--validation-fraction"):
        for value in ("nan", "inf", "-inf", "-0.1", "1", "1.0", "1.5", "99"):
            cases[f"option: {flag} {value}"] = option_case(f"{flag}={value}", named=flag)  # = : "-inf" is a value
    for a, b in (("0.5", "0.5"), ("0.9", "0.2"), ("0.6", "0.4")):
        cases[f"option: fractions {a} + {b}"] = option_case("--id-test-fraction", a, "--validation-fraction", b,
                                                            named="--id-test-fraction")
    for value in ("0", "-1", "-100"):
        cases[f"option: --max-length {value}"] = option_case("--max-length", value, named="--max-length")
    cases["option: --ood-values without --split-column"] = option_case("--ood-values", "zoo", named="--ood-values")
    cases["option: --split-column not a column"] = option_case("--split-column", "nope", "--ood-values", "zoo",
                                                               named="nope")
    cases["option: --question with two markers"] = option_case("--question", "<protein> or <protein>?",
                                                               named="--question")
    cases["option: --question with a dna marker"] = option_case("--question", "What is <dna>?", named="--question")
    return cases


def controls() -> dict[str, Case]:
    cases: dict[str, Case] = {
        "fasta": fasta_case(fasta(PROTEINS)), "fasta gzipped": fasta_case(gzip.compress(fasta(PROTEINS).encode()),
                                                                         "protein", "in.fa.gz"),
        "fasta with a byte-order mark": fasta_case("\ufeff" + fasta(PROTEINS)),
        "fasta lowercase": fasta_case(fasta([p.lower() for p in PROTEINS])),
        "fasta terminal stop": fasta_case(fasta([p + "*" for p in PROTEINS])),
        "dna": fasta_case(fasta(DNA), "dna"), "dna IUPAC to N": fasta_case(fasta([*DNA[:7], "ACGTRYACGT"]), "dna",
                                                                            "in.fa", "--iupac", "to_n"),
        "labels with padded cells": labels_case(labels().replace("s1,kinase", " s1 , kinase ")),
        "labels with OOD split": labels_case(labels(), "--split-column", "source", "--ood-values", "zoo"),
        "unlabeled skipped": labels_case(labels(7), "--skip-unlabeled"),
        "anndata": h5ad_case(), "anndata with OOD donor": h5ad_case(None, None, None, "--split-column", "donor",
                                                                    "--ood-values", "d2"),
    }
    for fmt in ("csv", "tsv", "jsonl", "parquet"):
        cases[f"table {fmt}"] = table_case(fmt, lambda rows: rows)
    return cases


def run_build(tmp_path, case: Case, capsys) -> tuple[int | str, str, str, str]:
    from bioreason.cli import main

    os.makedirs(tmp_path, exist_ok=True)
    argv, named = case(str(tmp_path))
    out = os.path.join(tmp_path, "out")
    try:
        code: int | str = main(["data", "build", *argv, "--out", out])
    except SystemExit as exit_:  # argparse: a usage error, exit 2
        code = f"SystemExit({exit_.code})"
    except Exception as err:  # a traceback a user would see  # noqa: BLE001
        code = f"{type(err).__name__}: {err}"
    captured = capsys.readouterr()
    return code, captured.err, named, out


def test_every_malformed_input_is_one_typed_line_naming_its_file(tmp_path, capsys):
    cases = malformed()
    assert len(cases) >= 200, len(cases)
    wrong = []
    for i, (name, case) in enumerate(cases.items()):
        code, err, named, out = run_build(tmp_path / f"case{i}", case, capsys)
        lines = err.strip().splitlines()
        if (code != 1 or len(lines) != 1 or not lines[0].startswith("bioreason: data error: ")
                or named not in lines[0] or "Traceback" in err or os.path.exists(out)):
            wrong.append(f"{name}: exit {code}, {len(lines)} lines: {err.strip()[:300]!r}")
    assert not wrong, f"{len(wrong)} of {len(cases)} malformed inputs answered wrongly:\n" + "\n".join(wrong)


def test_the_valid_controls_build_and_pass_their_own_check(tmp_path, capsys):
    from bioreason.data import check_task

    failed = []
    for i, (name, case) in enumerate(controls().items()):
        code, err, _, out = run_build(tmp_path / f"control{i}", case, capsys)
        if code != 0:
            failed.append(f"{name}: exit {code}: {err.strip()[:300]!r}")
            continue
        check_task(out)  # data build never writes what data check refuses
    assert not failed, "\n".join(failed)


def test_a_usage_error_of_data_build_is_one_line(tmp_path, capsys):
    from bioreason.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["data", "build", "--modality", "protein", "--id-test-fraction", "-inf", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "argument --id-test-fraction: expected one argument" in err and "data build --help" in err
