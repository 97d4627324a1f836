"""Open a task by the name a config or a command gives it: a folder written by `bioreason data build`, or
`benchmark:NAME`, built once under `data_root` (staged and renamed into place, so a killed build leaves no half
dataset). The one place that turns a dataset name into `(DatasetDict, cells)`: the recipes and `bioreason eval`
both open tasks here."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from bioreason.data.errors import BioReasonDataError
from bioreason.data.records import REBUILD_HINT, SPLITS, load_cells

BENCHMARK_PREFIX = "benchmark:"


def task_folder(dataset: str, data_root: str = "runs/data", seed: int = 0) -> str:
    """The folder a dataset name stands for, building a bundled benchmark there first if needed."""
    if not dataset.startswith(BENCHMARK_PREFIX):
        return dataset
    from bioreason.data.benchmarks import BENCHMARKS, build_benchmark

    name = dataset[len(BENCHMARK_PREFIX):]
    if name not in BENCHMARKS:  # before any folder is made: `benchmark:../..` must not create one outside data_root
        available = ", ".join(sorted(BENCHMARKS))
        raise BioReasonDataError(dataset, None, f"unknown benchmark {name!r}; available: {available}")
    path = os.path.join(data_root, f"{name}-seed{seed}")
    if not _current(path):  # absent, or built before the validation split: a cache of ours, so rebuilt
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
        build_benchmark(name, staging, seed=seed)
        replace_dir(staging, path)  # an unfinished older build there is replaced whole
    return path


def _current(path: str) -> bool:
    """A finished benchmark build with every split of `SPLITS` (one built before `validation` existed is not)."""
    summary = os.path.join(path, "summary.json")
    if not os.path.exists(summary):
        return False
    with open(summary, encoding="utf-8") as fh:
        return set(json.load(fh).get("splits", {})) == set(SPLITS)


def replace_dir(src: str, dst: str) -> None:
    """Move a finished folder into place in one rename (an older `dst` is moved aside first, then removed). Here,
    the lowest layer, so a task build and the recipes' checkpoints and final saves share it."""
    old = None
    if os.path.exists(dst):
        old = f"{dst}.old-{os.getpid()}"
        os.replace(dst, old)
    os.replace(src, dst)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def open_task(dataset: str, data_root: str = "runs/data", seed: int = 0):
    """`(DatasetDict, cells AnnData or None)` of a task folder or `benchmark:NAME`."""
    from datasets import load_from_disk

    path = task_folder(dataset, data_root, seed)
    cells = load_cells(path) if os.path.exists(os.path.join(path, "cells.h5ad")) else None
    loaded = load_from_disk(path)
    if "validation" not in loaded:
        raise BioReasonDataError(path, None, f"built before the validation split existed (splits {list(loaded)}); "
                                             + REBUILD_HINT)
    return loaded, cells


__all__ = ["open_task", "replace_dir", "task_folder"]
