"""What the JASPAR tasks' DNA sequences carry, independent of any encoder: a standardised logistic regression on each
sequence's k-mer frequencies (k = 2, 3, 4), fit on the whole train split and scored on the whole id_test / ood_test
splits, next to the train split's majority class. Prints JSON (kept as kmer_probe.json).

    python docs/measurements/bridge/kmer_probe.py jaspar_tf_class jaspar_tf_class_1kb > kmer_probe.json
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bioreason.training.arguments import DataArguments
from bioreason.training.task import load_task

SPLITS = ("train", "id_test", "ood_test")


def kmer_frequencies(seq: str, k: int) -> np.ndarray:
    """Share of each of the 4^k k-mers among the sequence's windows (windows holding N are skipped)."""
    index = {"".join(p): i for i, p in enumerate(itertools.product("ACGT", repeat=k))}
    counts = np.zeros(len(index))
    for start in range(len(seq) - k + 1):
        position = index.get(seq[start:start + k])
        if position is not None:
            counts[position] += 1
    return counts / max(1, len(seq) - k + 1)


def probe(benchmark: str) -> dict:
    dataset, _ = load_task(DataArguments(dataset=f"benchmark:{benchmark}"))
    labels = {s: np.array(dataset[s]["answer"]) for s in SPLITS}
    majority = Counter(labels["train"]).most_common(1)[0][0]
    out = {"n": {s: len(labels[s]) for s in SPLITS},
           "majority": {s: round(float((labels[s] == majority).mean()), 3) for s in SPLITS[1:]}}
    for k in (2, 3, 4):
        features = {s: np.stack([kmer_frequencies(r["dna"][0], k) for r in dataset[s]]) for s in SPLITS}
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features["train"],
                                                                                       labels["train"])
        out[f"{k}-mers"] = {s: round(float((model.predict(features[s]) == labels[s]).mean()), 3) for s in SPLITS[1:]}
    return out


if __name__ == "__main__":
    print(json.dumps({name: probe(name) for name in sys.argv[1:]}, indent=1))
