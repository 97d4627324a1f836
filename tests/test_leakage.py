"""A CPT corpus never holds an input of the task's held-out splits (`bioreason.data.leakage`): a planted leak in the
align corpus or in a text corpus is refused, naming the file, the record and the held-out split."""

from __future__ import annotations

import pytest
from datasets import DatasetDict, load_from_disk

from bioreason.data.benchmarks import build_benchmark
from bioreason.data.leakage import CorpusLeakError, check_align_corpus, check_text_corpus


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "antibody"
    build_benchmark("antibody_chain", str(path))
    return str(path)


def leaked(task: str, out) -> tuple[str, str, str]:
    """The task with train record 3 given the protein input of the first ood_test record; (path, train id, ood id)."""
    ds = load_from_disk(task)
    donor = ds["ood_test"][0]
    target = ds["train"][3]["id"]
    train = ds["train"].map(lambda r: {"protein": donor["protein"]} if r["id"] == target else {})
    path = str(out / "leaked")
    DatasetDict({**ds, "train": train}).save_to_disk(path)
    return path, target, donor["id"]


def test_an_align_corpus_with_a_held_out_input_is_refused_naming_both_records(task, tmp_path):
    path, target, donor = leaked(task, tmp_path)
    ds = load_from_disk(path)
    with pytest.raises(CorpusLeakError, match=rf"{path}: record '{target}'.*ood_test record '{donor}'"):
        check_align_corpus(ds["train"], ds, path)
    clean = load_from_disk(task)
    assert check_align_corpus(clean["train"], clean, task) == len(clean["train"])


def test_a_text_corpus_quoting_a_held_out_sequence_is_refused(task):
    ds = load_from_disk(task)
    sequence = ds["validation"][2]["protein"][0]
    documents = ["Antibodies bind antigens through their CDR loops.",
                 f"The variable domain reads {sequence[:40].lower()}{sequence[40:]} in the crystal structure."]
    with pytest.raises(CorpusLeakError, match=rf"corpus.txt: CPT text corpus: document 1 quotes the protein input of "
                                              rf"validation record '{ds['validation'][2]['id']}'"):
        check_text_corpus(documents, "corpus.txt", ds)
    part = sequence[: len(sequence) // 2]  # half a held-out sequence is not that input
    checked = check_text_corpus([documents[0], f"A fragment {part} only."], "corpus.txt", ds)
    assert checked["documents"] == 2 and checked["sequences"] > 0


def test_cpt_align_refuses_a_leaked_task_before_training(task, tmp_path):
    from conftest import tiny_model

    from bioreason.recipes.cpt import main

    path, target, _ = leaked(task, tmp_path)
    model, processor = tiny_model("antiberty", projector="mean")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    with pytest.raises(CorpusLeakError, match=f"record '{target}'"):
        main(["--model_name_or_path", str(tmp_path / "model"), "--dataset", path, "--mode", "align",
              "--max_train_examples", "4000", "--output_dir", str(out), "--max_steps", "1", "--use_cpu", "true",
              "--bf16", "false", "--report_to", "none"])
    assert not (out / "checkpoint-1").exists() and not (out / "final").exists()
