"""What scale a matrix of expression values is on, so an rna encoder can apply the transform standard single-cell
preprocessing applies to it (and refuse what cannot be undone).

A user's file may hold raw counts (integers), FPKM / TPM / CPM-like values (non-negative, not integers, large), log-
normalised values (log1p of normalised counts: small, non-negative) or scaled values (z-scores: negative entries).
Fed untransformed, FPKM values in the thousands swamp a linear layer; scaled values have lost each cell's depth. The
rules below are the ones an analyst applies by eye: negatives mean scaled; all integers mean counts; a maximum above
`LOG_MAX` cannot be a log of normalised counts (log1p of 1e4-normalised counts stays below ~10, log2 TPM below ~20).
"""

from __future__ import annotations

import numpy as np

SCALES = ("counts", "fpkm_tpm", "log_normalized", "scaled")
LOG_MAX = 30.0
SCALED_FIX = ("scaled values (negative entries) have lost each cell's depth and cannot be normalised again: give the "
              "raw counts (`--use-raw` in `bioreason data build` where the file keeps them in .raw)")
# what each scale means, and the transform an rna encoder applies to it by default
DESCRIPTION = {
    "counts": "raw counts (non-negative integers): normalise each cell to 10,000 total, then log1p",
    "fpkm_tpm": "FPKM / TPM-like values (non-negative, not integers, above 30): log1p",
    "log_normalized": "log-normalised values (non-negative, at most 30): used as they are",
    "scaled": "scaled values (negative entries, e.g. z-scores): cannot be normalised again; use the raw counts "
              "(`--use-raw` where the file keeps them in .raw)",
}


def to_log_normalized(values: np.ndarray, scale: str, target_sum: float = 1e4) -> np.ndarray:
    """One cell's values (all of its genes, so the total is the cell's depth) on the log-normalised scale the standard
    analysis works in: counts are normalised to `target_sum` then log1p'd, FPKM / TPM are log1p'd, log-normalised and
    scaled values are returned as they are (scaled ones cannot be normalised again; the caller decides whether to
    accept them)."""
    if scale == "counts":
        total = float(values.sum())
        return np.log1p(values / total * target_sum) if total > 0 else values.astype(np.float64)
    if scale == "fpkm_tpm":
        return np.log1p(values)
    if scale in ("log_normalized", "scaled"):
        return values
    raise ValueError(f"unknown input scale {scale!r}; one of {SCALES}")


def detect_scale(matrix) -> str:
    """One of `SCALES` for a cells x genes matrix (dense or scipy sparse); only the stored values are read."""
    values = matrix.data if hasattr(matrix, "tocsr") else np.asarray(matrix)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0 or not values.any():
        return "counts"  # all zero: nothing to transform, and a count matrix of empty cells is the likely source
    if (values < 0).any():
        return "scaled"
    if np.allclose(values, np.round(values), rtol=0, atol=1e-6):
        return "counts"
    return "fpkm_tpm" if values.max() > LOG_MAX else "log_normalized"


__all__ = ["DESCRIPTION", "LOG_MAX", "SCALED_FIX", "SCALES", "detect_scale", "to_log_normalized"]
