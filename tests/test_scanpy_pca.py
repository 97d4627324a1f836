"""The `scanpy_pca` rna encoder and input-scale detection: the stored transform is scanpy's, it survives save / load,
scaled input is refused with the fix named, and the detector tells counts, FPKM, log-normalised and z-scored apart."""

from __future__ import annotations

import copy
import os

import anndata
import numpy as np
import pytest
import scanpy as sc
import torch
from conftest import tiny_llm, tiny_tokenizer

from bioreason.data.errors import BioReasonDataError
from bioreason.data.expression import detect_scale
from bioreason.encoders import build_encoder, build_featurizer
from bioreason.encoders.scanpy_pca import ScanpyPCAEncoder, fit_transform_tensors

GENES = [f"G{i}" for i in range(80)]


def counts(cells: int = 150, seed: int = 0) -> np.ndarray:
    """Negative-binomial counts of three cell types that differ in a block of genes, with varying depth."""
    rng = np.random.default_rng(seed)
    means = rng.gamma(2.0, 2.0, size=(3, len(GENES)))
    for t in range(3):
        means[t, t * 10:(t + 1) * 10] *= 8
    kinds = rng.integers(0, 3, cells)
    depth = rng.uniform(0.5, 2.0, cells)[:, None]
    mu = means[kinds] * depth
    return rng.negative_binomial(5, 5 / (5 + mu)).astype(np.float32)


def cells(matrix: np.ndarray, prefix: str = "c") -> anndata.AnnData:
    adata = anndata.AnnData(matrix.copy())  # scanpy normalises in place: never the caller's array
    adata.var_names = GENES
    adata.obs_names = [f"{prefix}{i}" for i in range(matrix.shape[0])]
    return adata


def fitted(matrix: np.ndarray, **options) -> ScanpyPCAEncoder:
    opts, buffers = fit_transform_tensors(cells(matrix), n_top_genes=40, n_comps=8, **options)
    return ScanpyPCAEncoder({"type": "scanpy_pca", "source": None, "options": opts}, buffers)


def features(encoder: ScanpyPCAEncoder, matrix: np.ndarray, whiten: bool = False) -> np.ndarray:
    featurizer = encoder.featurizer_class(encoder.featurizer_spec())
    batch = featurizer([(GENES, row) for row in matrix])
    encoder.options["whiten"] = whiten
    out, mask = encoder(batch["values"], batch["mask"])
    assert out.shape == (matrix.shape[0], 1, encoder.hidden_size) and mask.all()
    return out[:, 0].detach().numpy()


def scanpy_reference(train: np.ndarray, held: np.ndarray):
    """scanpy's own pipeline on the train cells, and its steps applied by hand to held-back cells with the train
    cells' gene means, scales and loadings (what projecting new cells onto a fitted PCA means)."""
    ref = cells(train)
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=40, flavor="seurat")
    ref = ref[:, ref.var["highly_variable"]].copy()
    sc.pp.scale(ref, max_value=10)
    sc.pp.pca(ref, n_comps=8, random_state=0)
    new = cells(held, "h")
    sc.pp.normalize_total(new, target_sum=1e4)
    sc.pp.log1p(new)
    new = new[:, ref.var_names].copy()
    z = np.clip((new.X - ref.var["mean"].to_numpy()) / ref.var["std"].to_numpy(), -10, 10)
    return ref.obsm["X_pca"], (z - np.asarray(ref.X).mean(0)) @ ref.varm["PCs"]


def test_the_stored_transform_reproduces_scanpy_on_train_and_held_back_cells():
    train, held = counts(150, seed=0), counts(40, seed=1)
    encoder = fitted(train)
    assert encoder.options["input_scale"] == "counts"
    train_pcs, held_pcs = scanpy_reference(train, held)
    np.testing.assert_allclose(features(encoder, train), train_pcs, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(features(encoder, held), held_pcs, atol=2e-3, rtol=1e-3)
    whitened = features(encoder, train, whiten=True)
    np.testing.assert_allclose(whitened.std(0), 1.0, atol=1e-3)  # unit spread on the fit cells


def test_fpkm_values_are_log1p_transformed_without_renormalising():
    fpkm = counts(120) * 37.5 + 0.25  # large, non-integer
    assert detect_scale(fpkm) == "fpkm_tpm"
    encoder = fitted(fpkm)
    assert encoder.options["input_scale"] == "fpkm_tpm"
    ref = cells(fpkm)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=40, flavor="seurat")
    ref = ref[:, ref.var["highly_variable"]].copy()
    sc.pp.scale(ref, max_value=10)
    sc.pp.pca(ref, n_comps=8, random_state=0)
    np.testing.assert_allclose(features(encoder, fpkm), ref.obsm["X_pca"], atol=2e-3, rtol=1e-3)


def test_a_saved_and_loaded_model_gives_the_same_features(tmp_path):
    from bioreason import BioReasonForCausalLM
    from bioreason.model.composition import compose

    train = counts(100)
    tok = tiny_tokenizer()
    model, processor = compose(tiny_llm("llama", vocab_size=len(tok)), {"rna": fitted(train)}, projector="mean",
                               tokenizer=tok)
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    loaded = BioReasonForCausalLM.from_pretrained(tmp_path / "m")
    before, after = model.model.encoders["rna"], loaded.model.encoders["rna"]
    assert not list(after.parameters())  # frozen by construction: nothing to train
    for name, buffer in before.named_buffers():
        assert torch.equal(buffer, dict(after.named_buffers())[name]), name
    assert dict(after.named_buffers())["components"].abs().sum() > 0  # filled from safetensors, not zeros
    np.testing.assert_array_equal(features(before, train[:10]), features(after, train[:10]))
    from bioreason.hub.cards import composed_card

    assert "| rna encoder | `scanpy_pca` (frozen; input: counts values) |" in composed_card(loaded).text


def test_scaled_input_is_refused_naming_the_file_and_the_fix(tmp_path):
    z = counts(60)
    z = (z - z.mean(0)) / (z.std(0) + 1e-6)
    path = tmp_path / "scaled.h5ad"
    cells(z.astype(np.float32)).write_h5ad(path)
    with pytest.raises(BioReasonDataError, match=r"scaled\.h5ad: scaled values .* \(`--use-raw`"):
        ScanpyPCAEncoder.from_source(str(path), n_top_genes=40, n_comps=8)
    encoder = fitted(counts(60))
    featurizer = encoder.featurizer_class(encoder.featurizer_spec())
    with pytest.raises(ValueError, match=r"rna input 1: negative expression values, but this encoder was fit on "
                                         r"counts values; .*--use-raw"):
        featurizer([(GENES, counts(2)[0]), (GENES, z[1])])


def test_a_task_folder_source_fits_on_its_train_cells_only(tmp_path):
    from bioreason.data import BuildOptions, build_task

    matrix = counts(90)
    adata = cells(matrix)
    adata.obs["label"] = [f"t{i % 3}" for i in range(90)]
    adata.write_h5ad(tmp_path / "in.h5ad")
    out = tmp_path / "task"
    build_task(BuildOptions(modality="rna", h5ad=str(tmp_path / "in.h5ad"), label_column="label", out=str(out)))
    from bioreason.data import check_task

    assert check_task(str(out))["input_scale"]["scale"] == "counts"  # what `data check` prints
    from datasets import load_from_disk

    train_ids = [ref for refs in load_from_disk(str(out))["train"]["rna"] for ref in refs]
    encoder = ScanpyPCAEncoder.from_source(str(out), n_top_genes=40, n_comps=8)
    direct = fitted(np.stack([matrix[int(i[1:])] for i in train_ids]))
    for name, buffer in direct.named_buffers():
        torch.testing.assert_close(dict(encoder.named_buffers())[name], buffer, msg=name)
    assert len(train_ids) < 90


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: counts(50), "counts"),
    (lambda: counts(50) / counts(50).sum(1, keepdims=True).clip(1) * 1e6, "fpkm_tpm"),  # CPM
    (lambda: np.log1p(counts(50) / counts(50).sum(1, keepdims=True).clip(1) * 1e4), "log_normalized"),
    (lambda: (np.log1p(counts(50)) - np.log1p(counts(50)).mean(0)) / (np.log1p(counts(50)).std(0) + 1e-6), "scaled"),
    (lambda: np.zeros((4, 5)), "counts"),
])
def test_scale_detection_on_synthetic_matrices(make, expected):
    import scipy.sparse as sp

    matrix = make()
    assert detect_scale(matrix) == expected
    assert detect_scale(sp.csr_matrix(matrix)) == expected  # sparse: only the stored values are read


@pytest.mark.parametrize("scale", ["counts", "fpkm_tpm", "log_normalized"])
def test_the_expression_encoder_detects_its_source_scale_and_log_normalises_like_scanpy(tmp_path, scale):
    from bioreason.encoders.rna import ExpressionEncoder

    raw = counts(30)
    given = {"counts": raw, "fpkm_tpm": raw * 37.5 + 0.25,
             "log_normalized": np.log1p(raw / raw.sum(1, keepdims=True) * 1e4)}[scale].astype(np.float32)
    cells(given).write_h5ad(tmp_path / "cells.h5ad")
    encoder = ExpressionEncoder.from_source(str(tmp_path / "cells.h5ad"), hidden_size=8)
    assert encoder.options["input_scale"] == scale  # recorded in the spec: saved with the model, shown on the card
    reference = cells(given)
    if scale == "counts":
        sc.pp.normalize_total(reference, target_sum=1e4)
    if scale != "log_normalized":
        sc.pp.log1p(reference)
    featurizer = encoder.featurizer_class(encoder.featurizer_spec())
    values = featurizer([(GENES, row) for row in given[:5]])["values"].numpy()
    np.testing.assert_allclose(values, np.asarray(reference.X[:5]), rtol=1e-5, atol=1e-5)
    rebuilt = build_encoder(copy.deepcopy(encoder.spec))  # what from_pretrained rebuilds from the saved config
    assert rebuilt.featurizer_spec() == encoder.featurizer_spec()


def test_the_expression_encoder_without_a_scale_takes_values_as_given_and_refuses_both_options():
    from bioreason.encoders.rna import ExpressionEncoder

    spec = {"type": "expression", "source": None, "options": {"genes": GENES, "hidden_size": 8}}
    legacy = build_encoder(copy.deepcopy(spec))  # a model saved before input_scale existed
    raw = counts(3)
    values = legacy.featurizer_class(legacy.featurizer_spec())([(GENES, row) for row in raw])["values"].numpy()
    np.testing.assert_array_equal(values, raw)
    with pytest.raises(ValueError, match="input_scale .* or log1p, not both"):
        ExpressionEncoder({**spec, "options": {**spec["options"], "input_scale": "counts", "log1p": True}})
    with pytest.raises(ValueError, match="input_scale must be one of"):
        ExpressionEncoder({**spec, "options": {**spec["options"], "input_scale": "tpm"}})


def test_scaled_input_into_a_counts_expression_encoder_names_the_fix():
    encoder = build_encoder({"type": "expression", "source": None,
                             "options": {"genes": GENES, "hidden_size": 8, "input_scale": "counts"}})
    featurizer = encoder.featurizer_class(encoder.featurizer_spec())
    z = counts(2)
    z[1, 3] = -0.5
    with pytest.raises(ValueError, match=r"rna input 1: negative expression values, but this encoder takes counts "
                                         r"values; .*--use-raw"):
        featurizer([(GENES, z[0]), (GENES, z[1])])


def test_geneformer_ranks_log_normalised_cells_as_their_counts_and_warns_when_told_counts():
    from conftest import GENES as VOCAB_GENES
    from conftest import tiny_encoder

    encoder = tiny_encoder("geneformer")
    rng = np.random.default_rng(0)
    raw = rng.poisson(4.0, size=len(VOCAB_GENES)).astype(np.float64) * rng.integers(1, 4, size=len(VOCAB_GENES))
    logged = np.log1p(raw / raw.sum() * 1e4)
    as_counts = build_featurizer(encoder.featurizer_spec())
    expected = as_counts([(VOCAB_GENES, raw)])["values"]
    told = build_featurizer({**encoder.featurizer_spec(), "input_scale": "log_normalized"})
    assert torch.equal(told([(VOCAB_GENES, logged)])["values"], expected)
    with pytest.warns(UserWarning, match="look log-normalised .* input_scale=log_normalized"):
        as_counts([(VOCAB_GENES, logged)])
    with pytest.raises(ValueError, match="input_scale must be counts, fpkm_tpm or log_normalized.*--use-raw"):
        build_featurizer({**encoder.featurizer_spec(), "input_scale": "scaled"})


FIT_ON_ONE_THREAD = """
import numpy as np, torch, anndata
from bioreason.encoders.scanpy_pca import fit_transform_tensors
matrix = np.random.default_rng(0).poisson(2.0, (60, 80)).astype(np.float32)
fit_transform_tensors(anndata.AnnData(matrix), n_top_genes=40, n_comps=8)
print(torch.get_num_threads())
"""

FIT_WITH_THE_DEFAULT_THREADS = """
import numpy as np, torch, anndata
calls = []
torch.set_num_threads = lambda n: calls.append(n)
from bioreason.encoders.scanpy_pca import fit_transform_tensors
matrix = np.random.default_rng(0).poisson(2.0, (60, 80)).astype(np.float32)
fit_transform_tensors(anndata.AnnData(matrix), n_top_genes=40, n_comps=8)
print(len(calls))
"""


def test_fitting_leaves_torch_with_the_threads_it_was_given():
    """scanpy's `scale` (numba, OpenMP) set the process's OpenMP threads to the machine's cores the first time it ran,
    and torch shares that setting: a run given one thread by `OMP_NUM_THREADS=1` (two runs side by side) trained on
    every core after the rna input probe. A fresh process, since only numba's first launch does it."""
    import subprocess
    import sys

    env = {**{k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", FIT_ON_ONE_THREAD], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.split()[-1] == "1"


def test_fitting_that_leaves_the_thread_count_alone_does_not_set_it():
    """`torch.set_num_threads` called with the count torch already had still changed later training by an ulp, which
    made the full-disk test's in-process SFT differ from its subprocess after any scanpy fit in the same pytest
    process. With the default threads numba changes nothing, so nothing is set."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", FIT_WITH_THE_DEFAULT_THREADS], capture_output=True, text=True,
                         env=env, check=True)
    assert out.stdout.split()[-1] == "0"
