"""Raw UMI counts recovered from scanpy's bundled pbmc68k_reduced, as a user's own single-cell file (issue 25).

pbmc68k_reduced keeps, in `.raw`, log1p of each cell's counts normalised to 10,000 total over the whole transcriptome,
for 765 genes, and each cell's total in `obs["n_counts"]`; so `expm1(raw) * n_counts / 1e4` is the cell's UMI counts
(within 0.05 of an integer for 99.9994% of the non-zero entries), rounded here. Also written: the same cells as CPM
(counts per million over the 765 genes: FPKM / TPM-like, not integers). Labels: the benchmark's 6 lineages; the
Louvain cluster is kept as the split column (OOD: clusters 5, 6, 9, as `pbmc_cell_type`).

    PYTHONPATH=. .venv/bin/python docs/measurements/rna_encoder/derive_counts.py runs/user_rna
"""

from __future__ import annotations

import os
import sys

import numpy as np


def main(out: str) -> None:
    import anndata
    import scanpy as sc

    from bioreason.data.benchmarks.pbmc import LINEAGE

    adata = sc.datasets.pbmc68k_reduced()
    raw = adata.raw.to_adata()
    logged = raw.X.toarray() if hasattr(raw.X, "toarray") else np.asarray(raw.X)
    counts = np.rint(np.expm1(logged) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4).astype(np.float32)
    obs = adata.obs[["louvain"]].astype(str).copy()
    obs["lineage"] = [LINEAGE[str(x)] for x in adata.obs["bulk_labels"]]
    os.makedirs(out, exist_ok=True)
    for name, matrix in (("counts", counts), ("cpm", counts / counts.sum(1, keepdims=True) * 1e6)):
        cells = anndata.AnnData(matrix.astype(np.float32), obs=obs.copy())
        cells.var_names = [str(g) for g in raw.var_names]
        cells.write_h5ad(os.path.join(out, f"pbmc68k_{name}.h5ad"))
        print(f"wrote {out}/pbmc68k_{name}.h5ad: {cells.n_obs} cells x {cells.n_vars} genes, "
              f"max {matrix.max():.1f}, integers: {bool(np.all(matrix == np.rint(matrix)))}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/user_rna")
