"""pbmc_cell_type (rna): the immune lineage of a peripheral blood cell from scanpy's bundled pbmc68k_reduced
(700 cells x 765 genes, log-normalised values in `.raw`).

The 10 `bulk_labels` are coarsened to 6 lineages (T cell, B cell, NK cell, monocyte, dendritic cell, progenitor).
Out-of-domain: the cells of Louvain clusters 5, 6 and 9 - mixed clusters whose cells sit away from the main cluster
of their lineage - which is still answerable because every lineage in them also occurs in training and the question
lists the label set. In-domain: the other clusters, split 70/10/20 into train / validation / id_test
by cell.
"""

from __future__ import annotations

import os

import numpy as np

from bioreason.data.benchmarks.base import register_benchmark, split_groups
from bioreason.data.records import make_record

LINEAGE = {
    "CD4+/CD25 T Reg": "T cell", "CD4+/CD45RA+/CD25- Naive T": "T cell", "CD4+/CD45RO+ Memory": "T cell",
    "CD8+ Cytotoxic T": "T cell", "CD8+/CD45RA+ Naive Cytotoxic": "T cell", "CD14+ Monocyte": "monocyte",
    "CD19+ B": "B cell", "CD34+": "progenitor", "CD56+ NK": "NK cell", "Dendritic": "dendritic cell",
}
OOD_CLUSTERS = {"5", "6", "9"}


@register_benchmark(
    name="pbmc_cell_type",
    modality="rna",
    source="scanpy.datasets.pbmc68k_reduced() (bundled in the scanpy wheel; 10x Genomics PBMC 68k subset)",
    license="BSD-3-Clause (scanpy); data CC BY 4.0 (10x Genomics)",
    split_rule="OOD = Louvain clusters 5, 6, 9 (cells away from their lineage's main cluster); ID = other clusters, "
               "70/10/20 train / validation / id_test by cell; 6 lineages coarsened from bulk_labels",
)
def build(out: str, seed: int) -> tuple[list[dict], dict]:
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    cells = adata.raw.to_adata()
    cells.obs = adata.obs[["bulk_labels", "louvain", "phase"]].copy()
    cells.obs["lineage"] = [LINEAGE[str(x)] for x in cells.obs["bulk_labels"]]
    dense = cells.X.toarray() if hasattr(cells.X, "toarray") else np.asarray(cells.X)
    cells.X = dense.astype(np.float32)
    z = (dense - dense.mean(0)) / (dense.std(0) + 1e-6)
    genes = np.asarray(cells.var_names)
    labels = sorted(set(LINEAGE.values()))
    question = (f"<rna>\nThis is a blood cell's gene expression profile. Which immune lineage is it? Answer with one "
                f"of: {', '.join(labels)}.")
    id_cells = [c for c, cl in zip(cells.obs_names, cells.obs["louvain"], strict=True) if cl not in OOD_CLUSTERS]
    id_split = split_groups(id_cells, 0.2, seed)
    records = []
    for i, cell in enumerate(cells.obs_names):
        cluster = str(cells.obs["louvain"].iloc[i])
        split = "ood_test" if cluster in OOD_CLUSTERS else id_split[cell]
        top = genes[np.argsort(z[i])[::-1][:5]]
        why = f"Relative to the average cell in this dataset, its most over-expressed genes are {', '.join(top)}."
        records.append(make_record(str(cell), "pbmc_cell_type", split, "rna", [str(cell)], question,
                                   cells.obs["lineage"].iloc[i], labels, why, group=str(cell)))
    cells.write_h5ad(os.path.join(out, "cells.h5ad"))
    return records, {"cells": int(cells.n_obs), "genes": int(cells.n_vars)}
