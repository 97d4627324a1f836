"""The input-level probe: each modality's standard featurisation, and `input_probe` beside the encoder probe in the
baselines `bioreason eval` and the pipeline report (dna, rna and protein tasks)."""

from __future__ import annotations

import numpy as np
import pytest

from bioreason.evaluation.baselines import input_probe_scores
from bioreason.evaluation.input_probe import AMINO_ACIDS, DIPEPTIDES, KMERS, dna_features, protein_features


def test_protein_features_are_composition_then_dipeptides():
    f = protein_features("AACX")  # X is not an amino acid: it counts in neither block and breaks its pairs
    assert f.shape == (len(AMINO_ACIDS) + len(DIPEPTIDES),)
    assert f[AMINO_ACIDS.index("A")] == pytest.approx(2 / 3) and f[AMINO_ACIDS.index("C")] == pytest.approx(1 / 3)
    assert f[20 + DIPEPTIDES["AA"]] == pytest.approx(0.5) and f[20 + DIPEPTIDES["AC"]] == pytest.approx(0.5)
    assert f[20:].sum() == pytest.approx(1.0)


def test_dna_features_are_the_4mer_spectrum():
    f = dna_features("acgtNacgta")  # lower case counts; N breaks the k-mers across it
    assert f.shape == (256,) and f.sum() == pytest.approx(1.0)
    assert f[KMERS["ACGT"]] == pytest.approx(2 / 3) and f[KMERS["CGTA"]] == pytest.approx(1 / 3)


def records(modality: str, n: int, rng) -> list[dict]:
    """Two labels told apart only by the input's content: protein W-rich vs K-rich, DNA GC- vs AT-rich; rna by a
    block of genes (cell ids into `cells`)."""
    out = []
    for i in range(n):
        label = ["a", "b"][i % 2]
        if modality == "protein":
            alphabet = "ACDEFGHIKLMNPQRSTVY" + ("W" * 12 if label == "a" else "K" * 12)
            item = "".join(rng.choice(list(alphabet), 60))
        elif modality == "dna":
            item = "".join(rng.choice(list("GGGCCCAT" if label == "a" else "AAATTTGC"), 200))
        else:
            item = f"cell{i}"
        out.append({"id": f"r{i}", "answer": label, "label_set": ["a", "b"], modality: [item],
                    **{m: [] for m in ("dna", "rna", "protein") if m != modality}})
    return out


def expression(n: int, rng):
    import anndata

    means = np.full((2, 60), 3.0)
    means[0, :10] = 30.0
    x = rng.poisson(means[np.arange(n) % 2]).astype(np.float32)
    adata = anndata.AnnData(x)
    adata.obs_names = [f"cell{i}" for i in range(n)]
    adata.var_names = [f"G{j}" for j in range(60)]
    return adata


@pytest.mark.parametrize("modality", ["protein", "dna", "rna"])
def test_the_input_probe_reads_each_modality(modality):
    rng = np.random.default_rng(0)
    recs = records(modality, 80, rng)
    cells = expression(80, rng) if modality == "rna" else None
    scores = input_probe_scores(recs[:60], {"id": recs[60:]}, cells=cells)
    assert scores["id"]["accuracy"] == 1.0 and scores["id"]["n"] == 20
    assert list(scores["features"]) == [modality]
    shuffled = [{**r, "answer": ["a", "b"][j % 3 == 0]} for j, r in enumerate(recs)]  # labels unrelated to input
    assert input_probe_scores(shuffled[:60], {"id": shuffled[60:]}, cells=cells)["id"]["accuracy"] < 0.9


def test_one_label_in_train_is_refused():
    recs = records("dna", 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least two labels"):
        input_probe_scores([r for r in recs if r["answer"] == "a"], {"id": recs})


def test_the_rna_input_probe_runs_under_bf16_autocast_in_float32():
    """The pipeline scores under bf16 autocast on CPUs that compute bf16: the PCA transform stays float32 (once it
    crashed numpy on a bf16 tensor, and bf16 would round the loadings' products)."""
    import torch

    rng = np.random.default_rng(0)
    recs, cells = records("rna", 40, rng), expression(40, rng)
    plain = input_probe_scores(recs[:30], {"id": recs[30:]}, cells=cells)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = input_probe_scores(recs[:30], {"id": recs[30:]}, cells=cells)
    assert autocast == plain


@pytest.mark.parametrize(("benchmark", "modality"), [("antibody_chain", "protein"), ("jaspar_tf_class", "dna"),
                                                     ("pbmc_cell_type", "rna")])
def test_bioreason_eval_reports_the_input_probe_for_each_modality(tmp_path, benchmark, modality):
    from conftest import tiny_encoder, tiny_llm, tiny_tokenizer

    from bioreason.data.benchmarks import build_benchmark
    from bioreason.encoders.rna import ExpressionEncoder
    from bioreason.evaluation.evaluate import evaluate_model
    from bioreason.model.composition import compose

    build_benchmark(benchmark, str(tmp_path / "task"))
    encoder = {"protein": lambda: tiny_encoder("antiberty"), "dna": lambda: tiny_encoder("kmer"),
               "rna": lambda: ExpressionEncoder.from_source(str(tmp_path / "task" / "cells.h5ad"), hidden_size=16)}
    tok = tiny_tokenizer()
    model, processor = compose(tiny_llm("llama", vocab_size=len(tok)), {modality: encoder[modality]()},
                               projector="mean", tokenizer=tok)
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    out = evaluate_model(str(tmp_path / "m"), str(tmp_path / "task"), splits=("id_test",), max_examples=6,
                         reliance=False, bf16="false")
    probe = out["baselines"]["input_probe"]
    assert list(probe["features"]) == [modality] and probe["id_test"]["n"] == 6
    assert 0.0 <= probe["id_test"]["accuracy_lo"] <= probe["id_test"]["accuracy"] <= probe["id_test"]["accuracy_hi"]
