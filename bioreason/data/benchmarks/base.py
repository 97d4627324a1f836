"""Benchmark registry, shared split / leakage logic and the data card writer."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

from bioreason.data.errors import BioReasonDataError
from bioreason.data.records import (
    VALIDATION_FRACTION,
    assign_id_splits,
    make_record,
    save_task,
    summarize,
    to_dataset_dict,
)

BENCHMARKS: dict[str, Benchmark] = {}


@dataclass
class Benchmark:
    name: str
    modality: str
    source: str
    license: str
    split_rule: str
    build: Callable[[str, int], tuple[list[dict], dict]]  # (out, seed) -> (records, extra notes)


def register_benchmark(**meta) -> Callable:
    def wrap(fn):
        BENCHMARKS[meta["name"]] = Benchmark(build=fn, **meta)
        return fn

    return wrap


def package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"this benchmark reads data shipped in the {name!r} package: pip install 'bioreason[data]'")
    return spec.submodule_search_locations[0]


def split_groups(groups: list[str], fraction: float, seed: int) -> dict[str, str]:
    """In-domain group -> split: `fraction` of the groups to id_test, `VALIDATION_FRACTION` to validation, the rest
    to train (`bioreason.data.records.assign_id_splits`, which `data build` uses too)."""
    return assign_id_splits(groups, fraction, VALIDATION_FRACTION, seed)


def drop_leaks(records: list[dict], modality: str) -> int:
    """Remove train records whose input also occurs in a test split; return how many."""
    tested = {tuple(r[modality]) for r in records if r["split"] != "train"}
    leaked = [r for r in records if r["split"] == "train" and tuple(r[modality]) in tested]
    for r in leaked:
        records.remove(r)
    return len(leaked)


def build_benchmark(name: str, out: str, seed: int = 0) -> dict:
    if name not in BENCHMARKS:
        raise BioReasonDataError(None, None, f"unknown benchmark {name!r}; available: {', '.join(sorted(BENCHMARKS))}")
    bench = BENCHMARKS[name]
    os.makedirs(out, exist_ok=True)
    records, notes = bench.build(out, seed)
    leaked = drop_leaks(records, bench.modality)
    notes = {"task": name, "modality": bench.modality, "seed": seed, **notes,
             "leakage": {"train_inputs_also_in_test": leaked, "dropped_from_train": True}}
    dataset = to_dataset_dict(records)
    summary = summarize(dataset, notes)
    save_task(dataset, out, summary)
    write_card(bench, out, summary)
    return summary


def write_card(bench: Benchmark, out: str, summary: dict) -> None:
    rows = "\n".join(
        f"| {split} | {info['records']} | " + ", ".join(f"{k}: {v}" for k, v in info["labels"].items()) + " |"
        for split, info in summary["splits"].items()
    )
    text = f"""# {bench.name}

- **Modality**: {bench.modality}
- **Source**: {bench.source}
- **License**: {bench.license}
- **Split rule**: {bench.split_rule}
- **Seed**: {summary['seed']}
- **Leakage check**: {summary['leakage']['train_inputs_also_in_test']} train records had an input identical to one
  in a test split and were removed from train.

| split | records | labels |
|---|---|---|
{rows}

Built offline by `bioreason data build --benchmark {bench.name}`; the data are read from the installed package at
build time and are not redistributed in this repository.
"""
    with open(os.path.join(out, "DATA_CARD.md"), "w", encoding="utf-8") as fh:
        fh.write(text)


__all__ = ["BENCHMARKS", "Benchmark", "build_benchmark", "make_record", "register_benchmark"]
