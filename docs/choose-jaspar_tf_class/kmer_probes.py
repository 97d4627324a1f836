"""What a k-mer spectrum carries about jaspar_tf_class's labels on its validation split: a logistic regression (the
package's linear probe: standardised features, L2, lbfgs) on the `kmer` encoder's features (observed / expected - 1
per k-mer), k = 1-6, strand-specific and canonical, fit on the whole train split; with the train split's majority
class on the same records. Validation only: this reads what the encoder could give the LLM, it chooses nothing.

    PYTHONPATH=. .venv/bin/python docs/choose-jaspar_tf_class/kmer_probes.py [benchmark] > kmer_probes.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np

from bioreason.data.tasks import open_task
from bioreason.encoders.kmer import KmerFeaturizer
from bioreason.evaluation.intervals import wilson_interval
from bioreason.evaluation.linear_probe import make_linear_probe


def score(predicted, gold) -> dict:
    hits = int(sum(p == g for p, g in zip(predicted, gold, strict=True)))
    lo, hi = wilson_interval(hits, len(gold))
    return {"accuracy": round(hits / len(gold), 3), "accuracy_lo": round(lo, 3), "accuracy_hi": round(hi, 3),
            "n": len(gold)}


def main(benchmark: str = "jaspar_tf_class") -> dict:
    dataset, _ = open_task(f"benchmark:{benchmark}", "runs/data", 0)
    train, validation = dataset["train"], dataset["validation"]
    y_train, y_val = list(train["answer"]), list(validation["answer"])
    majority = Counter(y_train).most_common(1)[0][0]
    out = {"benchmark": benchmark, "train_records": len(train), "majority": score([majority] * len(y_val), y_val),
           "probes": []}
    for k in range(1, 7):
        for canonical in (False, True):
            featurize = KmerFeaturizer({"k": k, "canonical": canonical})
            x_train = featurize([r[0] for r in train["dna"]])["values"].numpy()
            x_val = featurize([r[0] for r in validation["dna"]])["values"].numpy()
            probe = make_linear_probe(0).fit(x_train, y_train)
            out["probes"].append({"k": k, "canonical": canonical, "features": x_train.shape[1],
                                  "train_accuracy": round(float(np.mean(probe.predict(x_train) == y_train)), 3),
                                  "validation": score(list(probe.predict(x_val)), y_val)})
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:]), indent=1))
