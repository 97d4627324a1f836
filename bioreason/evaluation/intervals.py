"""95% intervals for every score this package shows, and the paired comparison of two models on the same records.

Why here, in one place: a score of 0.875 on 32 records and on 723 records are different claims, and "GRPO beats SFT"
on the same records is a paired question, not two means. So:
- accuracy: the Wilson score interval (it stays inside [0, 1] and behaves at 0 and n, where the normal one does not);
- macro-F1 and reliance: a seeded percentile bootstrap over records (no closed form; records resampled with
  replacement, `N_BOOT` times);
- A vs B on the same records: the exact McNemar test on the discordant pairs, and a paired bootstrap interval of the
  accuracy difference. Given several seeds (rows of a [seeds, records] array), the per-record difference is averaged
  over seeds before records are resampled, so seeds add precision without being counted as more records.

Keys follow one pattern, `NAME`, `NAME_lo`, `NAME_hi`, so tables (`results.csv`) and JSON carry them flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054
N_BOOT = 1000


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes / n` (n >= 1); (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # contains p despite rounding


def bootstrap_indices(n: int, seed: int = 0, n_boot: int = N_BOOT) -> np.ndarray:
    """`[n_boot, n]` record indices drawn with replacement (seeded: the same records give the same interval)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def mean_interval(values: Sequence[float] | np.ndarray, seed: int = 0, n_boot: int = N_BOOT) -> tuple[float, float]:
    """Bootstrap interval of the mean of per-record values (e.g. correct(real) - correct(swapped) for reliance)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return 0.0, 0.0
    return percentile_interval(values[bootstrap_indices(len(values), seed, n_boot)].mean(1))


def macro_f1_samples(pred: np.ndarray, gold: np.ndarray, n_labels: int, index: np.ndarray) -> np.ndarray:
    """Macro-F1 (over the labels present among each sample's golds) for each row of record indices `index`.
    `pred` / `gold` are label ids; a prediction outside the label set is -1 (wrong for every class)."""
    p, g = pred[index], gold[index]
    f1 = np.zeros((index.shape[0], n_labels))
    present = np.zeros((index.shape[0], n_labels), dtype=bool)
    for label in range(n_labels):
        tp = ((p == label) & (g == label)).sum(1)
        fp = ((p == label) & (g != label)).sum(1)
        fn = ((p != label) & (g == label)).sum(1)
        denom = 2 * tp + fp + fn
        f1[:, label] = np.where(tp > 0, 2 * tp / np.maximum(denom, 1), 0.0)
        present[:, label] = (g == label).any(1)
    counts = present.sum(1)
    return np.where(counts > 0, (f1 * present).sum(1) / np.maximum(counts, 1), 0.0)


def macro_f1_interval(pred: np.ndarray, gold: np.ndarray, n_labels: int, seed: int = 0,
                      n_boot: int = N_BOOT) -> tuple[float, float]:
    if len(gold) == 0:
        return 0.0, 0.0
    return percentile_interval(macro_f1_samples(pred, gold, n_labels, bootstrap_indices(len(gold), seed, n_boot)))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: under "A and B are equally accurate" each discordant record is A's with
    probability 1/2, so the smaller count is a Binomial(a_only + b_only, 1/2) tail, doubled (capped at 1)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_comparison(correct_a, correct_b, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """B minus A on the same records: accuracies, the difference with its paired bootstrap 95% interval, the
    discordant counts and the exact McNemar p-value.

    `correct_a` / `correct_b`: 0/1 per record, `[records]` or `[seeds, records]` (the same records in the same order
    for every seed). With several seeds, McNemar counts every (seed, record) pair, and the interval resamples records
    with each record's difference averaged over the seeds."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=float))
    b = np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"a paired comparison needs the same records for both models: shapes {a.shape} and "
                         f"{b.shape}")
    if a.shape[1] == 0:
        raise ValueError("a paired comparison needs at least one record")
    per_record = (b - a).mean(0)
    lo, hi = mean_interval(per_record, seed, n_boot)
    a_only, b_only = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return {"n": int(a.shape[1]), "seeds": int(a.shape[0]), "accuracy_a": float(a.mean()),
            "accuracy_b": float(b.mean()), "difference": float(per_record.mean()), "difference_lo": lo,
            "difference_hi": hi, "a_only": a_only, "b_only": b_only, "p_value": mcnemar_exact(a_only, b_only)}


def format_difference(comparison: dict) -> str:
    """"+0.031 [-0.012, 0.074], p=0.23 (n=195 x 3 seeds)": a paired difference as the reports print it. The rows
    stacked on the same records are called what `comparison["stacked"]` says they are ("seeds" unless told): runs of
    several grid cells pooled over their seeds are runs, not seeds."""
    rows = comparison.get("seeds", 1)
    return (f"{comparison['difference']:+.3f} [{comparison['difference_lo']:+.3f}, {comparison['difference_hi']:+.3f}]"
            f", p={comparison['p_value']:.2g} (n={comparison['n']}"
            + (f" x {rows} {comparison.get('stacked', 'seeds')}" if rows > 1 else "") + ")")


def format_score(metrics: dict, key: str = "accuracy") -> str:
    """"0.875 [0.83, 0.91]": a score with its interval when it has one, "-" when it is absent."""
    if metrics.get(key) is None:
        return "-"
    if f"{key}_lo" in metrics:
        return f"{metrics[key]:.3f} [{metrics[key + '_lo']:.2f}, {metrics[key + '_hi']:.2f}]"
    return f"{metrics[key]:.3f}"


__all__ = ["N_BOOT", "bootstrap_indices", "format_difference", "format_score", "macro_f1_interval",
           "macro_f1_samples", "mcnemar_exact", "mean_interval", "paired_comparison", "wilson_interval"]
