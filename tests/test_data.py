"""The data package: every reader and validation rule, splits, leakage, the build / check CLI, and a fuzz of the
readers that may raise only BioReasonDataError."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys

import anndata
import numpy as np
import pandas as pd
import pytest
from datasets import load_from_disk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bioreason.data import (
    AlphabetPolicy,
    BioReasonDataError,
    BuildOptions,
    build_task,
    check_task,
    clean_sequence,
    load_cells,
    read_fasta,
    read_h5ad,
    read_table,
    rna_items,
)

PROTEINS = ["MKTAYIAKQR", "GSHMLEDPVR", "MVLSPADKTN", "MKWVTFISLL", "MALWMRLLPL", "MKVLAAGIVG", "MSDNELQKAL",
            "MTEYKLVVVG"]


def write(path, text, gz=False):
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def fasta_text(seqs, prefix="p"):
    return "".join(f">{prefix}{i} some description\n{s[:5]}\n{s[5:]}\n" for i, s in enumerate(seqs))


def labels_csv(n, prefix="p", extra=None):
    rows = ["id,family,source"] + [f"{prefix}{i},{'kinase' if i % 2 else 'globin'},{'lab' if i < n - 2 else 'zoo'}"
                                    for i in range(n)]
    return "\n".join(rows + (extra or [])) + "\n"


# Readers --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_read_fasta_plain_and_gzipped(tmp_path, gz):
    records = read_fasta(write(tmp_path / "a.fa", fasta_text(PROTEINS[:3]), gz=gz))
    assert [(r.id, r.sequence, r.line) for r in records] == [(f"p{i}", PROTEINS[i], 1 + 3 * i) for i in range(3)]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("MKTAYIAKQR\n>p1\nMKT\n", r"line 1: sequence data before the first '>' header"),
        (">p0\n>p1\nMKT\n", r"line 1: record 'p0' has an empty sequence"),
        (">p0\nMKT\n>p0\nMKV\n", r"line 3: duplicate id 'p0' \(first seen on line 1\)"),
        (">\nMKT\n", "line 1: header without an id"),
        ("", "no FASTA records"),
    ],
)
def test_read_fasta_errors(tmp_path, content, match):
    with pytest.raises(BioReasonDataError, match=match):
        read_fasta(write(tmp_path / "bad.fa", content))


def test_read_fasta_binary_missing_and_directory(tmp_path):
    binary = tmp_path / "x.fa"
    binary.write_bytes(b">p\x00\x01\x02")
    with pytest.raises(BioReasonDataError, match="x.fa: binary data"):
        read_fasta(str(binary))
    latin = tmp_path / "y.fa"
    latin.write_bytes(b">p\n\xff\xfe")
    with pytest.raises(BioReasonDataError, match="y.fa: not UTF-8 text"):
        read_fasta(str(latin))
    with pytest.raises(BioReasonDataError, match="nope.fa: file not found"):
        read_fasta(str(tmp_path / "nope.fa"))
    with pytest.raises(BioReasonDataError, match="is a directory"):
        read_fasta(str(tmp_path))
    truncated = tmp_path / "t.fa.gz"
    truncated.write_bytes(gzip.compress(b">p\nMKT\n")[:12])
    with pytest.raises(BioReasonDataError, match="corrupt gzip"):
        read_fasta(str(truncated))


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_read_table_formats(tmp_path, fmt):
    frame = pd.DataFrame({"id": ["a", "b"], "sequence": ["MKT", "GGS"], "y": ["x", "z"]})
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    assert read_table(str(path)).to_dict("records") == frame.to_dict("records")


def test_read_table_and_h5ad_errors(tmp_path):
    with pytest.raises(BioReasonDataError, match="unknown table format"):
        read_table(write(tmp_path / "t.xlsx", "a"))
    with pytest.raises(BioReasonDataError, match="cannot be parsed as a table"):
        read_table(write(tmp_path / "t.parquet", "not parquet"))
    with pytest.raises(BioReasonDataError, match="not a readable .h5ad file"):
        read_h5ad(write(tmp_path / "x.h5ad", "plain text"))


# Alphabets ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seq", "modality", "policy", "expected"),
    [
        ("acgtn", "dna", AlphabetPolicy(), "ACGTN"),
        ("ACGRT", "dna", AlphabetPolicy(iupac="to_n"), "ACGNT"),
        ("ACGRT", "dna", AlphabetPolicy(iupac="keep"), "ACGRT"),
        ("MKTX*", "protein", AlphabetPolicy(), "MKTX"),
        ("MKTBZ", "protein", AlphabetPolicy(ambiguous="to_x"), "MKTXX"),
    ],
)
def test_alphabet_policies(seq, modality, policy, expected):
    assert clean_sequence(seq, modality, policy, "f", 1) == expected


@pytest.mark.parametrize(
    ("seq", "modality", "policy", "match"),
    [
        ("ACGRT", "dna", AlphabetPolicy(), r"IUPAC ambiguity code 'R' at position 4 \(see --iupac\)"),
        ("ACGUT", "dna", AlphabetPolicy(), "invalid character 'U' at position 4"),
        ("MK*TA", "protein", AlphabetPolicy(), "internal stop codon"),
        ("MKTU", "protein", AlphabetPolicy(ambiguous="error"), "ambiguous residue 'U'"),
        ("mkta", "protein", AlphabetPolicy(lowercase="error"), "lowercase residues"),
        ("MKT1", "protein", AlphabetPolicy(), "invalid character '1'"),
        ("*", "protein", AlphabetPolicy(), "empty sequence"),
    ],
)
def test_alphabet_errors_name_file_and_record(seq, modality, policy, match):
    with pytest.raises(BioReasonDataError, match=rf"^f\.fa: record 'r7': {match}"):
        clean_sequence(seq, modality, policy, "f.fa", "r7")


# Building from user files -------------------------------------------------------------------------------------------
def build_fasta(tmp_path, seqs=PROTEINS, labels=None, **kw):
    fasta = write(tmp_path / "in.fa", fasta_text(seqs))
    csv = write(tmp_path / "labels.csv", labels if labels is not None else labels_csv(len(seqs)))
    opts = BuildOptions(modality="protein", label_column="family", out=str(tmp_path / "out"), fasta=fasta,
                        labels=csv, **kw)
    return build_task(opts), opts


def test_fasta_plus_labels_builds_a_loadable_dataset_dict(tmp_path):
    summary, opts = build_fasta(tmp_path, split_column="source", ood_values=["zoo"], seed=3)
    ds = load_from_disk(opts.out)
    assert set(ds) == {"train", "validation", "id_test", "ood_test"}
    assert sorted(ds["ood_test"]["id"]) == ["p6", "p7"]
    assert len(ds["train"]) + len(ds["validation"]) + len(ds["id_test"]) == 6 and len(ds["id_test"]) == 1
    assert len(ds["validation"]) == 1  # round(6 x 0.1)
    row = ds["train"][0]
    assert row["question"].startswith("<protein>\n") and row["label_set"] == ["globin", "kinase"]
    assert row["protein"] == [PROTEINS[int(row["id"][1:])]]
    assert summary["label_coverage"]["ood_test"] == "2/2"
    # deterministic with the seed, different with another seed
    again, _ = build_fasta(tmp_path, split_column="source", ood_values=["zoo"], seed=3)
    assert again["splits"] == summary["splits"]
    assert check_task(opts.out)["splits"] == summary["splits"]


def test_without_split_column_ood_is_empty_and_said(tmp_path):
    summary, _ = build_fasta(tmp_path)
    assert summary["splits"]["ood_test"]["records"] == 0
    assert "empty" in summary["ood_test"]


def test_unlabeled_sequences_error_or_are_counted(tmp_path):
    labels = labels_csv(6) + "zz9,kinase,lab\n"  # 2 sequences lack labels; 1 label lacks a sequence
    with pytest.raises(BioReasonDataError, match=r"2 sequences have no label .*\['p6', 'p7'\]"):
        build_fasta(tmp_path, labels=labels)
    summary, _ = build_fasta(tmp_path, labels=labels, skip_unlabeled=True)
    assert summary["skipped"]["no_label"] == 2 and summary["labels_without_sequence"] == 1
    assert sum(s["records"] for s in summary["splits"].values()) == 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label_column": "missing"}, r"labels.csv: missing column 'missing'; columns are \['id', 'family'"),
        ({"label_set": ["kinase"]}, r"labels.csv: line 2: label 'globin' of 'p0' is not in the label set \['kinase'\]"),
        ({"split_column": "source", "ood_values": ["mars"]}, r"--ood-values \['mars'\] match no record"),
        ({"split_column": "source"}, "needs --ood-values"),
    ],
)
def test_label_and_split_errors(tmp_path, kwargs, match):
    fasta = write(tmp_path / "in.fa", fasta_text(PROTEINS))
    csv = write(tmp_path / "labels.csv", labels_csv(len(PROTEINS)))
    opts = BuildOptions(**{"modality": "protein", "label_column": "family", "out": str(tmp_path / "o"),
                           "fasta": fasta, "labels": csv, **kwargs})
    with pytest.raises(BioReasonDataError, match=match):
        build_task(opts)


def test_label_set_errors_point_at_the_fasta_record_for_bad_residues(tmp_path):
    with pytest.raises(BioReasonDataError, match=r"in.fa: record 'p1': invalid character 'J'"):
        build_fasta(tmp_path, seqs=[PROTEINS[0], "MKJTA", *PROTEINS[2:]])


def test_too_long_sequences_are_skipped_and_counted(tmp_path):
    seqs = [*PROTEINS[:6], "M" * 50, "M" * 60]
    summary, _ = build_fasta(tmp_path, seqs=seqs, max_length=20)
    assert summary["skipped"]["longer_than_20"] == 2
    assert sum(s["records"] for s in summary["splits"].values()) == 6


def test_leakage_is_reported_and_dropped_on_request(tmp_path):
    seqs = [*PROTEINS[:6], PROTEINS[0], PROTEINS[1]]  # the two OOD ("zoo") records repeat train sequences
    summary, _ = build_fasta(tmp_path, seqs=seqs, split_column="source", ood_values=["zoo"])
    leaked = summary["leakage"]["train_inputs_also_in_test"]
    assert leaked >= 1 and summary["leakage"]["dropped_from_train"] is False
    dropped, opts = build_fasta(tmp_path, seqs=seqs, split_column="source", ood_values=["zoo"], drop_leaked=True)
    assert dropped["skipped"]["leaked_into_test"] == leaked
    ds = load_from_disk(opts.out)
    tested = {s for split in ("id_test", "ood_test") for row in ds[split]["protein"] for s in row}
    assert not tested & {s for row in ds["train"]["protein"] for s in row}


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
@pytest.mark.parametrize("modality", ["dna", "protein"])
def test_table_input_for_sequences(tmp_path, fmt, modality):
    seqs = ["ACGTACGTAA", "TTGACCAGTA", "GGGCCCAAAT", "ACGTTTGACA"] if modality == "dna" else PROTEINS[:4]
    frame = pd.DataFrame({"name": [f"s{i}" for i in range(4)], "seq": seqs, "cls": ["a", "b", "a", "b"]})
    path = tmp_path / f"t.{fmt}"
    {"csv": lambda: frame.to_csv(path, index=False), "tsv": lambda: frame.to_csv(path, sep="\t", index=False),
     "jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     "parquet": lambda: frame.to_parquet(path)}[fmt]()
    opts = BuildOptions(modality=modality, label_column="cls", out=str(tmp_path / "o"), table=str(path),
                        id_column="name", sequence_column="seq", question="Which class? {labels}")
    summary = build_task(opts)
    ds = load_from_disk(opts.out)
    assert sum(s["records"] for s in summary["splits"].values()) == 4
    assert ds["train"][0]["question"] == f"<{modality}>\nWhich class? a, b"


def test_rna_from_an_expression_table(tmp_path):
    frame = pd.DataFrame({"cell": [f"c{i}" for i in range(6)], "type": ["T", "B"] * 3,
                          "CD3E": [5, 0, 4, 1, 6, 0], "MS4A1": [0, 7, 1, 5, 0, 6]})
    frame.to_csv(tmp_path / "expr.csv", index=False)
    opts = BuildOptions(modality="rna", label_column="type", out=str(tmp_path / "o"), table=str(tmp_path / "expr.csv"),
                        id_column="cell")
    summary = build_task(opts)
    assert sum(s["records"] for s in summary["splits"].values()) == 6
    cells = load_cells(opts.out)
    assert list(cells.var_names) == ["CD3E", "MS4A1"] and cells["c1"].X[0, 1] == 7
    frame["MS4A1"] = frame["MS4A1"].astype(str)
    frame.loc[2, "MS4A1"] = "high"
    frame.to_csv(tmp_path / "expr.csv", index=False)
    with pytest.raises(BioReasonDataError, match=r"expr.csv: line 4: gene column 'MS4A1' holds a non-number 'high'"):
        build_task(opts)


def test_dna_from_fasta(tmp_path):
    fasta = write(tmp_path / "d.fa", ">s0\nACGTACGT\n>s1\nttgacgtc\n>s2\nGGGCCCAA\n>s3\nACGTNNAC\n")
    labels = write(tmp_path / "l.tsv", "id\ty\ns0\ta\ns1\tb\ns2\ta\ns3\tb\n")
    opts = BuildOptions(modality="dna", label_column="y", out=str(tmp_path / "o"), fasta=fasta, labels=labels)
    build_task(opts)
    ds = load_from_disk(opts.out)
    seqs = {r["id"]: r["dna"][0] for split in ds for r in ds[split]}
    assert seqs["s1"] == "TTGACGTC"  # soft-masked lowercase upper-cased by policy


def make_h5ad(path, x=None, genes=None):
    rng = np.random.default_rng(0)
    x = rng.poisson(2, size=(10, 6)).astype(np.float32) if x is None else x
    obs = pd.DataFrame({"cell_type": ["T", "B"] * 5, "donor": ["d1"] * 8 + ["d2"] * 2},
                       index=[f"cell{i}" for i in range(10)])
    adata = anndata.AnnData(x, obs=obs, var=pd.DataFrame(index=genes or [f"GENE{i}" for i in range(6)]))
    adata.write_h5ad(path)
    return str(path)


def test_h5ad_input_builds_rna_task_with_cells(tmp_path):
    path = make_h5ad(tmp_path / "c.h5ad")
    vocab = write(tmp_path / "vocab.txt", "GENE0\nGENE1\nGENE2\nOTHER\n")
    opts = BuildOptions(modality="rna", label_column="cell_type", out=str(tmp_path / "o"), h5ad=path,
                        split_column="donor", ood_values=["d2"], gene_vocab=vocab)
    summary = build_task(opts)
    assert summary["gene_vocab_overlap"] == {"genes": 6, "in_vocab": 3, "vocab": 4}
    assert summary["splits"]["ood_test"]["records"] == 2
    ds = load_from_disk(opts.out)
    cells = load_cells(opts.out)
    items = rna_items(cells, ds["ood_test"][0]["rna"])
    assert items[0].n_obs == 1 and items[0].obs_names[0] in {"cell8", "cell9"}
    assert check_task(opts.out)["splits"]["ood_test"]["records"] == 2


@pytest.mark.parametrize(
    ("x", "genes", "kwargs", "match"),
    [
        (np.full((10, 6), np.nan, dtype=np.float32), None, {}, r"record 'cell0': expression contains NaN or inf"),
        (-np.ones((10, 6), dtype=np.float32), None, {}, "negative expression values"),
        (None, None, {"label_column": "tissue"}, r"missing obs column 'tissue'; obs columns are \['cell_type'"),
        (None, [f"ENSG{i:011d}" for i in range(6)], {"gene_vocab": "SYMBOLS"}, r"none of the 6 genes \(Ensembl ids"),
        (None, None, {"use_raw": True}, "no .raw"),
    ],
)
def test_h5ad_errors(tmp_path, x, genes, kwargs, match):
    path = make_h5ad(tmp_path / "c.h5ad", x=x, genes=genes)
    if kwargs.get("gene_vocab"):
        kwargs["gene_vocab"] = write(tmp_path / "v.txt", "TP53\nCD3E\n")
    opts = BuildOptions(**{"modality": "rna", "label_column": "cell_type", "out": str(tmp_path / "o"), "h5ad": path,
                           **kwargs})
    with pytest.raises(BioReasonDataError, match=match):
        build_task(opts)


def test_validation_is_drawn_by_group_after_id_test_and_its_fraction_is_range_checked(tmp_path):
    seqs = [PROTEINS[i % len(PROTEINS)] + "A" * (i + 1) for i in range(40)]
    labels = "id,family,grp\n" + "".join(f"p{i},{'globin' if i % 2 else 'kinase'},g{i // 4}\n" for i in range(40))
    summary, opts = build_fasta(tmp_path, seqs=seqs, labels=labels, group_column="grp", validation_fraction=0.2,
                                id_test_fraction=0.2)
    ds = load_from_disk(opts.out)
    groups = {split: set(ds[split]["group"]) for split in ("train", "validation", "id_test")}
    assert len(groups["validation"]) == 2 and len(groups["id_test"]) == 2  # 10 groups x 0.2 each
    assert not (groups["train"] & groups["validation"] or groups["train"] & groups["id_test"]
                or groups["validation"] & groups["id_test"])
    assert summary["splits"]["validation"]["records"] == 8
    # id_test is the one it was before validation existed: the same permutation, id_test drawn first
    (tmp_path / "v0").mkdir()
    (tmp_path / "bad").mkdir()
    _, without = build_fasta(tmp_path / "v0", seqs=seqs, labels=labels, group_column="grp", validation_fraction=0.0,
                             id_test_fraction=0.2)
    assert set(load_from_disk(without.out)["id_test"]["id"]) == set(ds["id_test"]["id"])
    for kwargs, match in (({"validation_fraction": 1.5}, "--validation-fraction must be a number in"),
                          ({"validation_fraction": float("nan")}, "--validation-fraction must be"),
                          ({"id_test_fraction": -0.1}, "--id-test-fraction must be"),
                          ({"id_test_fraction": 0.6, "validation_fraction": 0.5}, "leave no in-domain groups")):
        with pytest.raises(BioReasonDataError, match=match):
            build_fasta(tmp_path / "bad", **kwargs)


def test_a_dataset_built_before_the_validation_split_gets_the_rebuild_command(tmp_path):
    from datasets import DatasetDict

    from bioreason.data.tasks import open_task

    _, opts = build_fasta(tmp_path, split_column="source", ood_values=["zoo"])
    ds = load_from_disk(opts.out)
    old = str(tmp_path / "old")
    DatasetDict({s: ds[s] for s in ("train", "id_test", "ood_test")}).save_to_disk(old)
    with pytest.raises(BioReasonDataError, match="built before the validation split existed.*bioreason data build"):
        check_task(old)
    with pytest.raises(BioReasonDataError, match="built before the validation split existed"):
        open_task(old)


def test_check_refuses_a_group_in_two_in_domain_splits(tmp_path):
    _, opts = build_fasta(tmp_path, split_column="source", ood_values=["zoo"])
    ds = load_from_disk(opts.out)
    moved = ds["id_test"].map(lambda r: {"group": ds["train"][0]["group"]})
    ds["id_test"] = moved
    ds.save_to_disk(str(tmp_path / "leaky"))
    with pytest.raises(BioReasonDataError, match="is in both train and id_test"):
        check_task(str(tmp_path / "leaky"))


def test_check_rejects_a_tampered_dataset(tmp_path):
    _, opts = build_fasta(tmp_path, split_column="source", ood_values=["zoo"])
    ds = load_from_disk(opts.out)
    bad = ds["train"].map(lambda r: {"answer": "plant"} if r["id"] == ds["train"][0]["id"] else {})
    ds["train"] = bad
    ds.save_to_disk(str(tmp_path / "tampered"))
    with pytest.raises(BioReasonDataError, match="answer 'plant' is not in its label_set"):
        check_task(str(tmp_path / "tampered"))
    with pytest.raises(BioReasonDataError, match="not a saved task dataset"):
        check_task(str(tmp_path / "nothing"))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "bioreason.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_build_and_check_and_error_without_traceback(tmp_path):
    fasta = write(tmp_path / "in.fa", fasta_text(PROTEINS))
    csv = write(tmp_path / "labels.csv", labels_csv(len(PROTEINS)))
    out = str(tmp_path / "o")
    proc = run_cli("data", "build", "--modality", "protein", "--fasta", fasta, "--labels", csv, "--label-column",
                   "family", "--split-column", "source", "--ood-values", "zoo", "--out", out)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.split("\n", 1)[1])
    assert summary["splits"]["ood_test"]["records"] == 2
    proc = run_cli("data", "check", out)
    assert proc.returncode == 0 and "OK" in proc.stdout
    checked = json.loads(proc.stdout.split("\n", 1)[1])
    assert set(checked["splits"]) == {"train", "validation", "id_test", "ood_test"}
    bad = write(tmp_path / "bad.fa", "MKT\n")
    proc = run_cli("data", "build", "--modality", "protein", "--fasta", bad, "--labels", csv, "--label-column",
                   "family", "--out", out)
    assert proc.returncode == 1
    assert "bad.fa: line 1: sequence data before the first '>' header" in proc.stderr
    assert "Traceback" not in proc.stderr


# Fuzz ---------------------------------------------------------------------------------------------------------------
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_only_data_errors(fn, path, *args):
    """Anything but a one-line BioReasonDataError naming the file fails the test."""
    try:
        return fn(*args)
    except BioReasonDataError as err:
        assert "\n" not in str(err) and str(err).startswith(str(path)), str(err)


@FUZZ
@given(data=st.binary(max_size=300), gz=st.booleans())
def test_fasta_reader_fuzz_raises_only_data_errors(tmp_path, data, gz):
    path = tmp_path / "f.fa"
    path.write_bytes(gzip.compress(data) if gz else data)
    for rec in assert_only_data_errors(read_fasta, path, str(path)) or []:
        assert rec.id and rec.sequence


@FUZZ
@given(data=st.binary(max_size=300), ext=st.sampled_from(["csv", "tsv", "jsonl", "parquet", "h5ad"]))
def test_table_and_h5ad_readers_fuzz_raise_only_data_errors(tmp_path, data, ext):
    path = tmp_path / f"t.{ext}"
    path.write_bytes(data)
    assert_only_data_errors(read_h5ad if ext == "h5ad" else read_table, path, str(path))


CELLS = st.one_of(st.text(max_size=12), st.none(), st.just(float("nan")), st.integers(-5, 5), st.booleans())


@FUZZ
@given(records=st.lists(st.tuples(st.text(min_size=0, max_size=6), CELLS, st.sampled_from(["a", "b", ""])),
                        min_size=1, max_size=8),
       modality=st.sampled_from(["dna", "protein"]), fmt=st.sampled_from(["jsonl", "csv"]))
def test_build_fuzz_random_records_raise_only_data_errors(tmp_path, records, modality, fmt):
    """Random ids, labels and sequence cells (JSON lines: text, null, NaN, numbers, booleans as typed; CSV: as
    text): a build raises only data errors, and a record whose sequence cell is not text never becomes one."""
    path = tmp_path / f"t.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps({"id": r[0], "sequence": r[1], "y": r[2]}) for r in records) + "\n")
    else:
        pd.DataFrame({"id": [r[0] for r in records], "sequence": [r[1] for r in records],
                      "y": [r[2] for r in records]}).to_csv(path, index=False)
    summary = assert_only_data_errors(
        build_task, path, BuildOptions(modality=modality, label_column="y", out=str(tmp_path / "o"), table=str(path)))
    if summary is not None:  # it built: every record kept or counted, and no kept sequence came from a non-text cell
        kept = sum(s["records"] for s in summary["splits"].values())
        assert kept + sum(summary["skipped"].values()) == len(records)
        if fmt == "jsonl":
            assert all(isinstance(r[1], str) for r in records)


@pytest.mark.parametrize(("fmt", "cell"), [("jsonl", None), ("jsonl", float("nan")), ("jsonl", 7), ("jsonl", True),
                                           ("parquet", None), ("parquet", float("nan"))])  # pyarrow: no text + numbers
def test_a_null_or_non_text_sequence_cell_is_an_error_naming_the_record(tmp_path, cell, fmt):
    """Before, str() made these "None" / "nan" / "7" / "True": "nan" is a valid DNA sequence (NAN)."""
    rows = [{"id": "s1", "sequence": "ACGT", "y": "a"}, {"id": "s2", "sequence": cell, "y": "b"}]
    path = tmp_path / f"t.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        pd.DataFrame(rows).to_parquet(path)
    with pytest.raises(BioReasonDataError, match=rf"{path}.*(line|record) 2.*'sequence' is "):
        build_task(BuildOptions(modality="dna", label_column="y", out=str(tmp_path / "o"), table=str(path)))


@pytest.mark.parametrize(("column", "question"), [
    ("Hours", "What are the hours of this cell?"),
    ("cell_type", "What is the cell type of this cell?"),
    ("cellType", "What is the cell type of this cell?"),
    ("CD4_status", "What is the CD4 status of this cell?"),
    ("class", "What is the class of this cell?"),
])
def test_the_default_question_is_built_grammatically_from_the_column_name(column, question):
    from bioreason.data.build import default_question

    assert default_question("rna", column, ["a", "b"]) == f"<rna>\n{question} Answer with one of: a, b."


def test_a_question_template_with_another_modalitys_marker_is_refused(tmp_path):
    with pytest.raises(ValueError, match="marks <dna> but the task's modality is protein"):
        build_fasta(tmp_path, question="<dna>\nWhich family? {labels}")


def test_data_build_takes_a_question_template_from_the_command_line(tmp_path):
    from bioreason.cli import main

    fasta = write(tmp_path / "in.fa", fasta_text(PROTEINS))
    csv = write(tmp_path / "labels.csv", labels_csv(len(PROTEINS)))
    assert main(["data", "build", "--modality", "protein", "--fasta", fasta, "--labels", csv, "--label-column",
                 "family", "--question", "Which family is <protein> in? {labels}", "--out",
                 str(tmp_path / "out")]) == 0
    question = load_from_disk(str(tmp_path / "out"))["train"][0]["question"]
    assert question == "Which family is <protein> in? globin, kinase"


@pytest.mark.parametrize(("options", "problem"), [
    (["--id-test-fraction", "nan"], "--id-test-fraction must be a number in [0, 1), got nan"),
    (["--id-test-fraction", "1.5"], "--id-test-fraction must be a number in [0, 1), got 1.5"),
    (["--id-test-fraction", "-0.1"], "--id-test-fraction must be a number in [0, 1), got -0.1"),
    (["--validation-fraction", "1.0"], "--validation-fraction must be a number in [0, 1), got 1.0"),
    (["--id-test-fraction", "0.6", "--validation-fraction", "0.4"], "leave no in-domain groups for train"),
    (["--max-length", "0"], "--max-length must be at least 1, not 0"),
    (["--ood-values", "x"], "--ood-values names values of --split-column, which is not given"),
    (["--gene-vocab", "MISSING"], "--gene-vocab: no such file"),
])
def test_data_build_range_checks_its_options_in_one_typed_line(tmp_path, capsys, options, problem):
    from bioreason.cli import main

    fasta = write(tmp_path / "in.fa", fasta_text(PROTEINS))
    csv = write(tmp_path / "labels.csv", labels_csv(len(PROTEINS)))
    options = [str(tmp_path / "nowhere.txt") if o == "MISSING" else o for o in options]
    assert main(["data", "build", "--modality", "protein", "--fasta", fasta, "--labels", csv, "--label-column",
                 "family", "--out", str(tmp_path / "out"), *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bioreason: data error: ") and problem in err
    assert not (tmp_path / "out").exists()


def test_data_build_refuses_an_out_that_is_a_file(tmp_path, capsys):
    from bioreason.cli import main

    fasta = write(tmp_path / "in.fa", fasta_text(PROTEINS))
    csv = write(tmp_path / "labels.csv", labels_csv(len(PROTEINS)))
    out = write(tmp_path / "out.txt", "keep me")
    assert main(["data", "build", "--modality", "protein", "--fasta", fasta, "--labels", csv, "--label-column",
                 "family", "--out", out]) == 1
    assert "is a file; it must be a folder" in capsys.readouterr().err
    assert open(out).read() == "keep me"


def write_table(path, rows: list[dict]) -> str:
    fmt = str(path).rsplit(".", 1)[1]
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(("fmt", "cell"), [("csv", "NA"), ("csv", "NaN"), ("csv", "nan"), ("csv", "None"),
                                           ("csv", "null"), ("csv", "N/A"), ("csv", ""), ("jsonl", None),
                                           ("parquet", None)])
def test_a_null_label_is_a_missing_label_in_every_format(tmp_path, fmt, cell):
    """One null policy: CSV (read as text) named "NA" a class where a Parquet / JSON null was refused."""
    rows = [{"id": f"s{i}", "sequence": "ACGTAC", "y": "ab"[i % 2]} for i in range(6)] + [
        {"id": "s6", "sequence": "ACGTAC", "y": cell}]
    path = write_table(tmp_path / f"t.{fmt}", rows)
    with pytest.raises(BioReasonDataError, match=r"record 's6' has an empty 'y'"):
        build_task(BuildOptions(modality="dna", label_column="y", out=str(tmp_path / "o"), table=path))
    summary = build_task(BuildOptions(modality="dna", label_column="y", out=str(tmp_path / "o"), table=path,
                                      skip_unlabeled=True))
    assert summary["skipped"]["no_label"] == 1 and sum(s["records"] for s in summary["splits"].values()) == 6


@pytest.mark.parametrize("cell", ["NA", "NaN", "null"])
def test_a_csv_sequence_cell_spelled_as_null_is_not_a_sequence(tmp_path, cell):
    """"NaN" was built as the DNA sequence NAN, "NA" as NA."""
    path = write_table(tmp_path / "t.csv", [{"id": "s1", "sequence": "ACGT", "y": "a"},
                                            {"id": "s2", "sequence": cell, "y": "b"}])
    with pytest.raises(BioReasonDataError, match=rf"{path}: line 3: 'sequence' is empty \(null\)"):
        build_task(BuildOptions(modality="dna", label_column="y", out=str(tmp_path / "o"), table=path))


def test_a_list_label_is_an_error_not_an_answer(tmp_path):
    """A JSON array label became the answer "['x', 'y']" and entered the label set."""
    path = write_table(tmp_path / "t.jsonl", [{"id": "s1", "sequence": "ACGT", "y": "a"},
                                              {"id": "s2", "sequence": "ACGA", "y": ["x", "y"]}])
    with pytest.raises(BioReasonDataError, match=r"line 2: 'y' is a list \['x', 'y'\], not one value"):
        build_task(BuildOptions(modality="dna", label_column="y", out=str(tmp_path / "o"), table=path))


def test_a_repeated_csv_column_name_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,sequence,y,y\ns1,ACGT,a,b\ns2,ACGA,b,a\n")
    with pytest.raises(BioReasonDataError, match=r"line 1: column name\(s\) \['y'\] appear more than once"):
        build_task(BuildOptions(modality="dna", label_column="y", out=str(tmp_path / "o"), table=str(path)))


def test_a_ragged_csv_row_is_one_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,sequence,y\ns1,ACGT,a\ns2,ACGA,b,extra,cells\n")
    with pytest.raises(BioReasonDataError, match="cannot be parsed as a table") as caught:
        build_task(BuildOptions(modality="dna", label_column="y", out=str(tmp_path / "o"), table=str(path)))
    assert "\n" not in str(caught.value) and "line 3" in str(caught.value)


# The bad inputs a new user's 325 generated cases found answered wrongly (issue 26) ----------------------------------
def run_build(capsys, *args) -> tuple[int, str]:
    from bioreason.cli import main

    code = main(["data", "build", *args])
    return code, capsys.readouterr().err


def test_a_gzip_file_with_a_corrupt_body_is_a_typed_error(tmp_path, capsys):
    packed = gzip.compress(fasta_text(PROTEINS).encode())
    broken = tmp_path / "in.fa.gz"
    broken.write_bytes(packed[:20] + b"\x00garbage" * 5 + packed[-8:])  # a good header, a body zlib refuses
    csv = write(tmp_path / "labels.csv", labels_csv(len(PROTEINS)))
    code, err = run_build(capsys, "--modality", "protein", "--fasta", str(broken), "--labels", csv,
                          "--label-column", "family", "--out", str(tmp_path / "out"))
    assert code == 1 and err.count("\n") == 1 and f"{broken}: corrupt gzip data" in err


def test_a_fasta_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.fa"
    path.write_bytes("\ufeff".encode() + fasta_text(PROTEINS[:2]).encode())
    assert [r.sequence for r in read_fasta(str(path))] == PROTEINS[:2]


def test_a_run_of_terminal_stop_codons_is_named_as_such(tmp_path):
    assert clean_sequence("MKTAYIAKQR*", "protein", AlphabetPolicy(), "f.fa", "a") == "MKTAYIAKQR"
    with pytest.raises(BioReasonDataError, match=r"record 'a': ends in 2 stop codons '\*\*'"):
        clean_sequence("MKTAYIAKQR**", "protein", AlphabetPolicy(), "f.fa", "a")
    with pytest.raises(BioReasonDataError, match="internal stop codon"):
        clean_sequence("MKT*AYIAKQR", "protein", AlphabetPolicy(), "f.fa", "a")


@pytest.mark.parametrize(("content", "problem"), [(bytes(range(256)), "binary data (NUL bytes)"),
                                                  (b"\xff\xfe\x80abc\n", "not UTF-8 text"),
                                                  (b"\n\n", "--gene-vocab: no gene ids in the file")])
def test_a_gene_vocab_that_is_not_a_list_of_genes_is_named(tmp_path, capsys, content, problem):
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(content)
    code, err = run_build(capsys, "--modality", "rna", "--h5ad", make_h5ad(tmp_path / "c.h5ad"), "--label-column",
                          "cell_type", "--gene-vocab", str(vocab), "--out", str(tmp_path / "out"))
    assert code == 1 and err.count("\n") == 1 and f"{vocab}: " in err and problem in err


def test_an_unknown_benchmark_is_a_typed_error(tmp_path, capsys):
    code, err = run_build(capsys, "--benchmark", "nope", "--out", str(tmp_path / "out"))
    assert code == 1 and "unknown benchmark 'nope'; available: antibody_chain" in err
    assert not (tmp_path / "out").exists()


def test_build_never_writes_a_question_its_check_refuses(tmp_path, capsys):
    fasta = write(tmp_path / "in.fa", fasta_text(PROTEINS))
    csv = write(tmp_path / "labels.csv", labels_csv(len(PROTEINS)))
    code, err = run_build(capsys, "--modality", "protein", "--fasta", fasta, "--labels", csv, "--label-column",
                          "family", "--question", "<protein> and <protein>?", "--out", str(tmp_path / "out"))
    assert code == 1 and "--question marks <protein> 2 times, but each record has one protein input" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("x", "genes", "problem"), [(np.zeros((10, 0), np.float32), [], "no genes (0 columns)"),
                                                     (np.zeros((0, 6), np.float32), None, "no cells (0 rows)")])
def test_an_expression_matrix_without_genes_or_cells_is_refused(tmp_path, x, genes, problem):
    path = tmp_path / "c.h5ad"
    obs = pd.DataFrame({"cell_type": ["T", "B"] * (len(x) // 2)}, index=[f"cell{i}" for i in range(len(x))])
    anndata.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(x.shape[1])])).write_h5ad(path)
    with pytest.raises(BioReasonDataError, match=re.escape(problem)):
        build_task(BuildOptions(modality="rna", label_column="cell_type", h5ad=str(path), out=str(tmp_path / "o")))


def test_every_record_out_of_domain_is_refused(tmp_path):
    path = make_h5ad(tmp_path / "c.h5ad")
    with pytest.raises(BioReasonDataError, match="nothing is left for train, validation and id_test"):
        build_task(BuildOptions(modality="rna", label_column="cell_type", h5ad=path, out=str(tmp_path / "o"),
                                split_column="donor", ood_values=["d1", "d2"]))


def test_an_empty_label_of_a_named_record_names_it_once(tmp_path):
    path = tmp_path / "c.h5ad"
    obs = pd.DataFrame({"cell_type": ["T", "B", "", "B"]}, index=["c0", "c1", "c2", "c3"])
    anndata.AnnData(np.ones((4, 3), np.float32), obs=obs).write_h5ad(path)
    with pytest.raises(BioReasonDataError) as err:
        build_task(BuildOptions(modality="rna", label_column="cell_type", h5ad=str(path), out=str(tmp_path / "o")))
    assert str(err.value) == f"{path}: record 'c2': an empty 'cell_type' label"


def test_an_unreadable_h5ad_says_what_failed(tmp_path):
    path = write(tmp_path / "bad.h5ad", "this is not hdf5")
    with pytest.raises(BioReasonDataError, match=r"not a readable \.h5ad file \(OSError: .*signature"):
        read_h5ad(path)


def test_padded_ids_and_labels_are_stripped_and_reported(tmp_path):
    fasta = write(tmp_path / "in.fa", fasta_text(PROTEINS[:6]))
    csv = write(tmp_path / "labels.csv", "id,family\np0 , kinase\np1,globin \np2,kinase\np3,globin\np4,kinase\n"
                                         "p5,globin\n")
    summary = build_task(BuildOptions(modality="protein", fasta=fasta, labels=csv, label_column="family",
                                      out=str(tmp_path / "o")))
    assert summary["whitespace_stripped"] == {"labels.csv:id": 1, "labels.csv:family": 2}
    ds = load_from_disk(str(tmp_path / "o"))
    assert sorted({a for split in ds.values() for a in split["answer"]}) == ["globin", "kinase"]


def test_a_wide_rna_table_builds_without_anndata_warnings(tmp_path):
    import warnings

    rows = [{"cell": f"c{i}", "type": "xy"[i % 2], **{f"G{g}": float(i + g) for g in range(4)}} for i in range(8)]
    table = write_table(tmp_path / "wide.csv", rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # anndata's ImplicitModificationWarning when a view of the cells was written
        build_task(BuildOptions(modality="rna", table=table, id_column="cell", label_column="type",
                                out=str(tmp_path / "o")))
    assert (tmp_path / "o" / "cells.h5ad").exists()
