"""The bundled real benchmarks: built offline from installed packages, valid, honestly split, deterministic."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from conftest import tiny_llm, tiny_tokenizer
from datasets import load_from_disk

from bioreason.data import check_task, load_cells, modality_inputs, rna_items, to_messages
from bioreason.data.benchmarks import BENCHMARKS, build_benchmark
from bioreason.encoders import build_encoder
from bioreason.model.composition import compose

NAMES = sorted(BENCHMARKS)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    return {name: (str(root / name), build_benchmark(name, str(root / name), seed=0)) for name in NAMES}


def test_benchmarks_cover_the_three_modalities():
    assert {b.modality for b in BENCHMARKS.values()} == {"dna", "rna", "protein"}
    assert set(NAMES) == {"antibody_chain", "jaspar_tf_class", "jaspar_tf_class_1kb", "pbmc_cell_type",
                          "peptide_activity"}


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_is_valid_split_and_carded(built, name):
    path, summary = built[name]
    assert check_task(path)["splits"] == summary["splits"]
    for split in ("train", "validation", "id_test", "ood_test"):
        assert summary["splits"][split]["records"] > 0
    ds = load_from_disk(path)
    label_set = set(ds["train"][0]["label_set"])
    for split in ds:
        assert set(ds[split]["answer"]) <= label_set
    assert set(ds["ood_test"]["answer"]) <= set(ds["train"]["answer"])  # OOD stays answerable
    train_groups, test_groups = set(ds["train"]["group"]), set(ds["id_test"]["group"])
    validation_groups = set(ds["validation"]["group"])
    assert not train_groups & test_groups
    assert not validation_groups & (train_groups | test_groups)  # drawn by group, like id_test
    n_id_groups = len(train_groups | validation_groups | test_groups)  # after the leak check emptied some train groups
    assert round(n_id_groups * 0.1) <= len(validation_groups) <= round(n_id_groups * 0.1 / 0.95) + 1
    modality = BENCHMARKS[name].modality
    tested = {tuple(x) for split in ("validation", "id_test", "ood_test") for x in ds[split][modality]}
    assert not tested & {tuple(x) for x in ds["train"][modality]}
    assert all(r for r in ds["train"]["reasoning"])
    card = open(os.path.join(path, "DATA_CARD.md")).read()
    assert BENCHMARKS[name].license in card and str(summary["splits"]["ood_test"]["records"]) in card


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_is_deterministic_with_its_seed(built, tmp_path, name):
    path, _ = built[name]
    again = load_from_disk(build_benchmark(name, str(tmp_path / "a"), seed=0) and str(tmp_path / "a"))
    first = load_from_disk(path)
    for split in first:
        assert list(first[split]["id"]) == list(again[split]["id"])
        modality = BENCHMARKS[name].modality
        assert list(first[split][modality]) == list(again[split][modality])
    other = load_from_disk(build_benchmark(name, str(tmp_path / "b"), seed=1) and str(tmp_path / "b"))
    assert set(other["id_test"]["id"]) != set(first["id_test"]["id"])


def test_split_rules_hold(built):
    jaspar = load_from_disk(built["jaspar_tf_class"][0])
    assert all(", vertebrates)" in r for r in list(jaspar["train"]["reasoning"]) + list(jaspar["id_test"]["reasoning"]))
    assert not any(", vertebrates)" in r for r in jaspar["ood_test"]["reasoning"])
    antibody = load_from_disk(built["antibody_chain"][0])
    assert {i.split("|")[0] for i in antibody["train"]["id"]} == {"human", "mouse"}
    assert not {i.split("|")[0] for i in antibody["ood_test"]["id"]} & {"human", "mouse"}
    cells = load_cells(built["pbmc_cell_type"][0])
    pbmc = load_from_disk(built["pbmc_cell_type"][0])
    ood_clusters = {str(cells.obs.loc[c[0], "louvain"]) for c in pbmc["ood_test"]["rna"]}
    assert ood_clusters == {"5", "6", "9"}


@pytest.mark.parametrize("name", NAMES)
def test_no_held_out_input_is_in_the_cpt_corpus_of_a_benchmark(built, name):
    """CPT align trains on the train split's descriptions: no input of validation / id_test / ood_test is among
    them (the check CPT runs before training, on the whole split rather than one draw)."""
    from bioreason.data.leakage import check_align_corpus, held_out_inputs

    path, summary = built[name]
    ds = load_from_disk(path)
    assert check_align_corpus(ds["train"], ds, path) == summary["splits"]["train"]["records"]
    assert len(held_out_inputs(ds)) > 0


def test_antibody_descriptions_carry_the_chain_markers_of_the_sequence_without_naming_the_chain(built):
    """CPT aligns on these descriptions: each reads its CDRs from the record's own sequence, never names a chain type,
    and over the train split they separate the chains as IMGT numbering does (a light chain's CDR2 has 3 residues,
    a heavy chain's more; kappa alone fills position 10)."""
    ds = load_from_disk(built["antibody_chain"][0])["train"]
    seen = {}
    for row in ds:
        text = row["reasoning"]
        assert not re.search(r"heavy|kappa|lambda|light", text, re.IGNORECASE), text
        cdr1, cdr2 = re.findall(r"CDR\d (\w+) \((\d+) residues\)", text)
        assert cdr1[0] in row["protein"][0] and cdr2[0] in row["protein"][0] and len(cdr2[0]) == int(cdr2[1])
        filled = "position 10 holds" in text
        seen.setdefault(row["answer"], []).append((len(cdr2[0]), filled))
    assert all(n > 3 for n, _ in seen["heavy"]) and all(n == 3 for n, _ in seen["kappa"])
    assert sum(f for _, f in seen["kappa"]) / len(seen["kappa"]) > 0.9
    assert not any(f for _, f in seen["heavy"] + seen["lambda"])


@pytest.mark.parametrize(("name", "length"), [("jaspar_tf_class", 48), ("jaspar_tf_class_1kb", 1000)])
def test_jaspar_sites_come_from_their_matrix(built, name, length):
    from bioreason.data.benchmarks.jaspar import load_matrices

    matrices = {m["matrix"]: m for m in load_matrices()}
    ds = load_from_disk(built[name][0])
    for row in ds["id_test"].select(range(20)):
        m = matrices[row["group"]]
        start, end = (int(x) for x in row["reasoning"].split()[1].split("-"))
        site = row["dna"][0][start - 1: end]
        assert len(site) == len(m["counts"]) and len(row["dna"][0]) == length
        freqs = m["counts"] / m["counts"].sum(1, keepdims=True)
        # the site is a sample from the profile: no position uses a base the profile (nearly) never has
        assert all(freqs[i]["ACGT".index(b)] > 0 or m["counts"][i].sum() < 20 for i, b in enumerate(site))


def test_records_feed_the_processor_and_model(built):
    """A benchmark record -> chat messages -> processor -> tiny model forward, for a protein and an rna task."""
    tok = tiny_tokenizer()
    path = built["pbmc_cell_type"][0]
    cells = load_cells(path)
    expression = build_encoder({"type": "expression", "options": {"genes": list(cells.var_names), "hidden_size": 16}})
    protein = build_encoder({"type": "antiberty", "config": {"vocab_size": 25, "hidden_size": 16,
                                                             "num_hidden_layers": 1, "num_attention_heads": 2,
                                                             "intermediate_size": 32, "max_position_embeddings": 160},
                             "options": {"vocab": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                   *"ACDEFGHIKLMNPQRSTVWY"]}})
    model, processor = compose(tiny_llm(vocab_size=len(tok)), {"rna": expression, "protein": protein},
                               projector="mean", tokenizer=tok)
    for name in ("pbmc_cell_type", "antibody_chain"):
        record = load_from_disk(built[name][0])["train"][0]
        text = processor.tokenizer.apply_chat_template(to_messages(record), tokenize=False)
        items = modality_inputs(record)
        if "rna" in items:
            items["rna"] = rna_items(cells, items["rna"])
        out = model(**processor(text=text, **items))
        assert torch.isfinite(out.logits).all()


def test_a_task_opens_by_folder_or_benchmark_name_and_a_benchmark_is_built_once(tmp_path, monkeypatch):
    """`bioreason.data.tasks.open_task` is where the recipes and `bioreason eval` open tasks; an unfinished older
    build (no summary.json) is replaced whole."""
    from bioreason.data import benchmarks
    from bioreason.data.tasks import open_task

    builds = []
    real = benchmarks.build_benchmark

    def counting(*args, **kwargs):
        builds.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmarks, "build_benchmark", counting)
    (tmp_path / "antibody_chain-seed0").mkdir()
    (tmp_path / "antibody_chain-seed0" / "partial.arrow").write_text("a killed build")
    dataset, cells = open_task("benchmark:antibody_chain", data_root=str(tmp_path))
    assert builds == ["antibody_chain"] and cells is None
    assert set(dataset) == {"train", "validation", "id_test", "ood_test"}
    assert not (tmp_path / "antibody_chain-seed0" / "partial.arrow").exists()
    again, _ = open_task("benchmark:antibody_chain", data_root=str(tmp_path))
    by_folder, _ = open_task(str(tmp_path / "antibody_chain-seed0"))
    assert builds == ["antibody_chain"] and len(again["train"]) == len(by_folder["train"]) == len(dataset["train"])
    # a cached build from before the validation split is a cache of ours: rebuilt, not refused
    summary = tmp_path / "antibody_chain-seed0" / "summary.json"
    old = json.loads(summary.read_text())
    old["splits"].pop("validation")
    summary.write_text(json.dumps(old))
    rebuilt, _ = open_task("benchmark:antibody_chain", data_root=str(tmp_path))
    assert builds == ["antibody_chain", "antibody_chain"] and "validation" in rebuilt


def test_an_unknown_or_escaping_benchmark_name_creates_no_folder(tmp_path):
    from bioreason.data.errors import BioReasonDataError
    from bioreason.data.tasks import open_task

    root = tmp_path / "a" / "b"
    for name in ("nope", "../../escaped"):
        with pytest.raises(BioReasonDataError, match=rf"^benchmark:{re.escape(name)}: unknown benchmark "
                                                     rf"'{re.escape(name)}'; available: antibody_chain, "):
            open_task(f"benchmark:{name}", data_root=str(root))
    assert not (tmp_path / "a").exists() and not list(tmp_path.iterdir())
