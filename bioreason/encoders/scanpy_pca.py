"""`scanpy_pca`: a cell as the first principal components of the standard single-cell analysis.

Why: the `expression` MLP frozen at its random initialisation throws away what any analyst's first five lines keep,
and on a user's FPKM data a logistic regression on log1p expression beat the whole model by 0.2 (issue 25). This
encoder is those five lines, fit once with scanpy on the train split's cells: normalise each cell's total to 10,000
(raw counts only), log1p (counts and FPKM / TPM), keep the highly variable genes, scale each gene to unit variance
(clipped at 10), project on the top principal components. Everything the transform learned (gene panel, the genes
kept, means, scales, the PCA's centre and loadings) is a buffer of the module, so it is saved in the model's
safetensors and a loaded model applies exactly the same transform with neither the training data nor scanpy.

Frozen and deterministic (no parameters); one token of `n_comps` values, whitened by each component's spread on the
train cells so a projector sees features of unit scale. Which transform applies follows the input's scale
(`bioreason.data.expression.detect_scale` on the fit cells, or `input_scale=` given); scaled (z-scored) input is
refused, since each cell's depth is gone from it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from bioreason.data.expression import SCALED_FIX
from bioreason.encoders.base import Encoder, optional_import, register_encoder
from bioreason.encoders.rna import PanelFeaturizer

FIT_SCALES = ("counts", "fpkm_tpm", "log_normalized")


class PCAFeaturizer(PanelFeaturizer):
    """The cell aligned to the fit's gene panel, raw (the encoder transforms it); negative values are refused."""

    def __call__(self, items):
        out = super().__call__(items)
        negative = (out["values"] < 0).any(-1)
        if negative.any():
            i = int(negative.nonzero()[0, 0])
            raise ValueError(f"rna input {i}: negative expression values, but this encoder was fit on "
                             f"{self.spec['input_scale']} values; {SCALED_FIX}")
        return out


def keeps_torch_threads(fn):
    """Restore torch's intra-op thread count after `fn`. Why: `sc.pp.scale` runs numba code whose OpenMP threading
    layer sets the process-wide OpenMP thread count to the machine's cores, and torch reads the same setting, so a run
    limited to one thread (two runs side by side on two cores) trained on two after the rna input probe. Only a count
    that changed is set back: `torch.set_num_threads` called at all, even with the count torch already has, changed
    later training by an ulp (the full-disk test's SFT weights up to 3.7e-09 apart from a fresh process's)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    return wrapper


@keeps_torch_threads
def fit_transform_tensors(adata, input_scale: str = "auto", n_top_genes: int = 2000, n_comps: int = 50,
                          target_sum: float = 1e4, max_value: float = 10.0, seed: int = 0,
                          where: str = "<cells>") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(options, buffers) of the standard analysis fit with scanpy on `adata` (cells x genes, values as given)."""
    sc = optional_import("scanpy", "pip install scanpy")
    anndata = optional_import("anndata", "pip install anndata")
    from bioreason.data.errors import BioReasonDataError
    from bioreason.data.expression import detect_scale

    matrix = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    scale = detect_scale(matrix) if input_scale == "auto" else input_scale
    if scale not in FIT_SCALES:
        raise BioReasonDataError(where, None, SCALED_FIX if scale == "scaled" else
                                 f"input_scale {scale!r} is not one of {FIT_SCALES} or 'auto'")
    if adata.n_obs < 3:
        raise BioReasonDataError(where, None, f"{adata.n_obs} cells: the PCA needs at least 3 to fit")
    genes = [str(g) for g in adata.var_names]
    work = anndata.AnnData(matrix.astype(np.float32), var={"gene": genes})
    work.var_names = genes
    if scale == "counts":
        sc.pp.normalize_total(work, target_sum=target_sum)
    if scale in ("counts", "fpkm_tpm"):
        sc.pp.log1p(work)
    n_top = min(n_top_genes, len(genes))
    if n_top < len(genes):
        sc.pp.highly_variable_genes(work, n_top_genes=n_top, flavor="seurat")
        keep = np.flatnonzero(work.var["highly_variable"].to_numpy())
    else:
        keep = np.arange(len(genes))
    work = work[:, keep].copy()
    sc.pp.scale(work, max_value=max_value)
    k = int(min(n_comps, work.n_obs - 1, work.n_vars - 1))
    sc.pp.pca(work, n_comps=k, random_state=seed)
    scaled = np.asarray(work.X, dtype=np.float64)
    projected = np.asarray(work.obsm["X_pca"], dtype=np.float64)
    buffers = {
        "keep": torch.as_tensor(keep, dtype=torch.long),
        "gene_mean": torch.as_tensor(work.var["mean"].to_numpy(), dtype=torch.float32),
        "gene_std": torch.as_tensor(work.var["std"].to_numpy(), dtype=torch.float32),
        "pca_mean": torch.as_tensor(scaled.mean(0), dtype=torch.float32),  # the PCA centres the clipped values
        "components": torch.as_tensor(np.ascontiguousarray(work.varm["PCs"]), dtype=torch.float32),
        "pc_std": torch.as_tensor(np.maximum(projected.std(0), 1e-6), dtype=torch.float32),
    }
    options = {"genes": genes, "input_scale": scale, "n_top_genes": n_top, "n_comps": k, "target_sum": target_sum,
               "max_value": max_value, "seed": seed}
    return options, buffers


def train_cells(source: str):
    """The cells to fit on: a task folder's train split (never its validation or test cells), or a whole .h5ad."""
    anndata = optional_import("anndata", "pip install anndata")
    if os.path.isdir(source):
        from datasets import load_from_disk

        cells = anndata.read_h5ad(os.path.join(source, "cells.h5ad"))
        ids = [ref for refs in load_from_disk(source)["train"]["rna"] for ref in refs]
        return cells[list(dict.fromkeys(ids))].copy(), os.path.join(source, "cells.h5ad")
    return anndata.read_h5ad(source), source


@register_encoder("scanpy_pca")
class ScanpyPCAEncoder(Encoder):
    """The standard analysis as a frozen encoder. Source: a task folder (fit on its train cells) or an .h5ad (fit on
    all of its cells). Options: `n_comps` (50), `n_top_genes` (2000), `input_scale` ('auto'), `target_sum` (1e4),
    `max_value` (10), `whiten` (True), `seed` (0)."""

    featurizer_class = PCAFeaturizer

    def __init__(self, spec: dict, buffers: dict[str, torch.Tensor] | None = None):
        super().__init__(spec)
        opts = self.options
        if not opts.get("genes") or "n_comps" not in opts or "n_top_genes" not in opts:
            raise ValueError("the scanpy_pca encoder is built by fitting (`from_source`): its spec lacks the fit")
        opts.setdefault("whiten", True)
        shapes = {"keep": (opts["n_top_genes"],), "gene_mean": (opts["n_top_genes"],),
                  "gene_std": (opts["n_top_genes"],), "pca_mean": (opts["n_top_genes"],),
                  "components": (opts["n_top_genes"], opts["n_comps"]), "pc_std": (opts["n_comps"],)}
        for name, shape in shapes.items():  # zeros until the fit (or from_pretrained's safetensors) fills them
            value = buffers[name] if buffers else torch.zeros(shape, dtype=torch.long if name == "keep" else None)
            self.register_buffer(name, value.clone())

    @property
    def hidden_size(self) -> int:
        return int(self.options["n_comps"])

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> ScanpyPCAEncoder:
        if not source:
            raise ValueError("scanpy_pca needs a source to fit on: a task folder (its train cells) or an .h5ad")
        cells, where = train_cells(source)
        whiten = options.pop("whiten", True)
        fitted, buffers = fit_transform_tensors(cells, where=where, **options)
        return cls({"type": cls.type_name, "source": source, "options": {**fitted, "whiten": whiten}}, buffers)

    def featurizer_spec(self) -> dict:
        return {"type": self.type_name, "genes": self.options["genes"], "num_tokens": 1,
                "input_scale": self.options["input_scale"]}

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        """`[B, genes]` raw values -> `[B, n_comps]`, in float32 whatever the model's dtype or autocast (bf16 would
        round the loadings' products to 3 significant digits)."""
        with torch.autocast(device_type=values.device.type, enabled=False):
            return self._transform(values.float())

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.options["input_scale"]
        if scale == "counts":
            x = x / x.sum(-1, keepdim=True).clamp(min=1e-12) * float(self.options["target_sum"])
        if scale in ("counts", "fpkm_tpm"):
            x = torch.log1p(x)
        x = x[:, self.keep]
        limit = float(self.options["max_value"])
        z = ((x - self.gene_mean.float()) / self.gene_std.float()).clamp(-limit, limit)
        pcs = (z - self.pca_mean.float()) @ self.components.float()
        return pcs / self.pc_std.float() if self.options.get("whiten", True) else pcs

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.transform(values).unsqueeze(1)
        return out, torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)


__all__ = ["PCAFeaturizer", "ScanpyPCAEncoder", "fit_transform_tensors", "train_cells"]
