"""The task record and the task dataset.

A record: `id`, modality inputs (`dna` / `protein`: sequence strings; `rna`: cell ids into the dataset's
`cells.h5ad`), `question` (with one `<dna>` / `<rna>` / `<protein>` marker per input), `answer`, `reasoning` ("" when
absent), `label_set` (the closed answer set, [] for open tasks), `task`, `split`, and `group` (what must not straddle
splits, e.g. the source matrix of a sampled binding site). A task dataset is a `datasets.DatasetDict` with splits
`train`, `validation`, `id_test`, `ood_test`, saved with `save_to_disk`, plus `summary.json` (and `cells.h5ad` for rna
tasks).
"""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
from datasets import DatasetDict, Features, List, Value, load_from_disk

from bioreason.data.errors import BioReasonDataError

SPLITS = ("train", "validation", "id_test", "ood_test")
# The held-out splits every score is reported on, by the short name metrics use. `validation` is where configs,
# checkpoints and a study's best run are chosen; `id_test` / `ood_test` are scored for the record, never chosen on.
EVAL_SPLITS = {"validation": "validation", "id": "id_test", "ood": "ood_test"}
TEST_SPLITS = {"id": "id_test", "ood": "ood_test"}
VALIDATION_FRACTION = 0.1  # of the in-domain groups, drawn after id_test from the same permutation
REBUILD_HINT = ("rebuild it: `bioreason data build ... --out DIR` with the options that built it (a bundled "
                "benchmark: `bioreason data build --benchmark NAME --out DIR`, or delete the folder and "
                "`benchmark:NAME` rebuilds it on next use)")


def assign_id_splits(groups: list[str], id_test_fraction: float, validation_fraction: float,
                     seed: int) -> dict[str, str]:
    """In-domain group -> `id_test` / `validation` / `train`: one seeded permutation of the sorted unique groups; the
    first `round(n x id_test_fraction)` go to id_test, the next `round(n x validation_fraction)` to validation. A
    group never straddles splits, and id_test is the same set it was before validation existed."""
    unique = sorted(set(groups))
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    n_test = int(round(len(order) * id_test_fraction))
    n_val = int(round(len(order) * validation_fraction))
    return {g: "id_test" if k < n_test else "validation" if k < n_test + n_val else "train"
            for k, g in enumerate(order)}
MODALITY_FIELDS = ("dna", "rna", "protein")
FEATURES = Features({
    "id": Value("string"),
    "task": Value("string"),
    "split": Value("string"),
    "dna": List(Value("string")),
    "rna": List(Value("string")),
    "protein": List(Value("string")),
    "question": Value("string"),
    "answer": Value("string"),
    "reasoning": Value("string"),
    "label_set": List(Value("string")),
    "group": Value("string"),
})


def make_record(id: str, task: str, split: str, modality: str, inputs: list[str], question: str, answer: str,
                label_set: list[str], reasoning: str = "", group: str = "") -> dict:
    record = {field: [] for field in MODALITY_FIELDS}
    record.update(id=id, task=task, split=split, question=question, answer=answer, reasoning=reasoning or "",
                  label_set=list(label_set), group=group or id)
    record[modality] = list(inputs)
    return record


def length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {}
    arr = np.asarray(lengths)
    return {"min": int(arr.min()), "median": float(np.median(arr)), "max": int(arr.max())}


def summarize(dataset: DatasetDict, notes: dict | None = None) -> dict:
    """Records per split and label, input length distribution, label-set coverage."""
    summary: dict = {"splits": {}}
    label_set: set[str] = set()
    for split in SPLITS:
        ds = dataset[split]
        labels = Counter(ds["answer"])
        lengths = [len(x) for m in ("dna", "protein") for inputs in ds[m] for x in inputs]
        for row_set in ds["label_set"]:
            label_set.update(row_set)
        summary["splits"][split] = {"records": len(ds), "labels": dict(sorted(labels.items())),
                                    "sequence_length": length_stats(lengths)}
    if label_set:
        summary["label_set"] = sorted(label_set)
        summary["label_coverage"] = {
            split: f"{len(set(summary['splits'][split]['labels']) & label_set)}/{len(label_set)}" for split in SPLITS
        }
    summary.update(notes or {})
    return summary


def save_task(dataset: DatasetDict, out: str, summary: dict) -> None:
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # three splits of a few thousand rows: the bars are noise in the CLI summary
    # one shard per split: datasets writes no shard at all for an empty split unless told, then cannot load it
    dataset.save_to_disk(out, num_shards={split: 1 for split in dataset})
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)


def to_dataset_dict(records: list[dict]) -> DatasetDict:
    from datasets import Dataset

    columns = {s: {name: [r[name] for r in records if r["split"] == s] for name in FEATURES} for s in SPLITS}
    # from_dict, not from_list: an empty split must still carry the schema (from_list([]) saves none)
    return DatasetDict({s: Dataset.from_dict(cols, features=FEATURES) for s, cols in columns.items()})


def check_task(path: str) -> dict:
    """Validate a built task dataset and return its summary; problems raise `BioReasonDataError`."""
    from bioreason.data.alphabets import AlphabetPolicy, clean_sequence

    try:
        dataset = load_from_disk(path)
    except Exception as err:
        raise BioReasonDataError(path, None, f"not a saved task dataset ({type(err).__name__}: {err})") from None
    if isinstance(dataset, DatasetDict) and set(dataset) == set(SPLITS) - {"validation"}:
        raise BioReasonDataError(path, None, f"built before the validation split existed (splits {list(dataset)}); "
                                             + REBUILD_HINT)
    if not isinstance(dataset, DatasetDict) or set(dataset) != set(SPLITS):
        raise BioReasonDataError(path, None, f"expected splits {list(SPLITS)}, found {list(dataset)}")
    missing = set(FEATURES) - set(dataset["train"].features)
    if missing:
        raise BioReasonDataError(path, None, f"records lack fields {sorted(missing)}")
    seen: dict[str, str] = {}
    group_split: dict[str, str] = {}
    policy = AlphabetPolicy(iupac="keep", ambiguous="keep")
    cells = None
    for split in SPLITS:
        for row in dataset[split].to_list():  # one Arrow conversion: datasets' per-row formatting took 3x longer
            rid = row["id"]
            if rid in seen:
                raise BioReasonDataError(path, rid, f"id appears in both {seen[rid]} and {split}")
            seen[rid] = split
            if row["split"] != split:
                raise BioReasonDataError(path, rid, f"split field {row['split']!r} but stored in {split}")
            if split != "ood_test":  # in-domain splits are drawn by group: a group in two of them leaks
                first = group_split.setdefault(row["group"], split)
                if first != split:
                    raise BioReasonDataError(path, rid, f"group {row['group']!r} is in both {first} and {split}")
            if row["label_set"] and row["answer"] not in row["label_set"]:
                raise BioReasonDataError(path, rid, f"answer {row['answer']!r} is not in its label_set")
            for modality in MODALITY_FIELDS:
                markers = row["question"].count(f"<{modality}>")
                if markers != len(row[modality]):
                    raise BioReasonDataError(path, rid, f"{markers} <{modality}> markers but "
                                                        f"{len(row[modality])} {modality} inputs")
                if modality in ("dna", "protein"):
                    for seq in row[modality]:
                        if clean_sequence(seq, modality, policy, path, rid) != seq:
                            raise BioReasonDataError(path, rid, f"{modality} sequence is not normalised")
                elif row[modality]:
                    if cells is None:
                        cells = cell_names(path)
                    absent = [c for c in row[modality] if c not in cells]
                    if absent:
                        raise BioReasonDataError(path, rid, f"cell {absent[0]!r} is not in cells.h5ad")
    notes = {}
    summary_path = os.path.join(path, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as fh:
            notes = {k: v for k, v in json.load(fh).items() if k not in ("splits", "label_set", "label_coverage")}
    return summarize(dataset, notes)


def cell_names(path: str) -> set[str]:
    """The cell ids (obs names) of a task's cells.h5ad, read with h5py from AnnData's on-disk layout (`obs` names its
    index dataset in the `_index` attribute): `data check` needs only these, and importing anndata and reading the
    matrix cost it 0.2 s of its ~1 s. Any other layout goes through anndata."""
    import h5py

    file = os.path.join(path, "cells.h5ad")
    try:
        with h5py.File(file, "r") as fh:
            obs = fh["obs"]
            return set(obs[obs.attrs["_index"]].asstr()[:])
    except (OSError, KeyError, TypeError):
        return set(load_cells(path).obs_names)


def load_cells(path: str):
    """The AnnData holding the cells an rna task's records refer to."""
    from bioreason.data.readers import read_h5ad

    return read_h5ad(os.path.join(path, "cells.h5ad"))


def rna_items(cells, refs: list[str]) -> list:
    """One-row AnnData items (what the processor's rna featurizers take) for cell ids."""
    return [cells[ref] for ref in refs]
