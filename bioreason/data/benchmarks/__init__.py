"""Real benchmarks built offline from data shipped inside installed packages (nothing is downloaded, nothing is
committed): one task dataset per modality, each with deterministic splits, a data card and a leakage check.

    bioreason data build --benchmark NAME --out DIR
"""

from bioreason.data.benchmarks import antibody, jaspar, pbmc, peptides  # noqa: F401,E402  (registration)
from bioreason.data.benchmarks.base import BENCHMARKS, build_benchmark

__all__ = ["BENCHMARKS", "build_benchmark"]
