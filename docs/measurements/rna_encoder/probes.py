"""What each rna featurisation knows, before any LLM: majority class, the encoder probe with the `expression` MLP at
its seeded random initialisation (the config's encoder until issue 25; seeds 0-2), the encoder probe with
`scanpy_pca` (fit on the train cells), and the input probe (`baselines.input_probe`). Logistic regressions as
`bioreason.evaluation.baselines` fits them; scored on whole validation / id_test / ood_test splits with Wilson 95%
intervals. Writes probes.json next to this script.

    PYTHONPATH=. .venv/bin/python docs/measurements/rna_encoder/probes.py benchmark:pbmc_cell_type \
        runs/user_rna/task_counts runs/user_rna/task_cpm
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = {"validation": "validation", "id": "id_test", "ood": "ood_test"}


def encoder_features(encoder, records, cells) -> np.ndarray:
    from bioreason.data.chat import modality_inputs

    featurizer = encoder.featurizer_class(encoder.featurizer_spec())
    items = [modality_inputs(r, cells)["rna"][0] for r in records]
    batch = featurizer(items)
    with torch.no_grad():
        out, _ = encoder(batch["values"], batch["mask"])
    return out.float().mean(1).numpy()


def regression(encoder, train, splits, cells, seed: int = 0) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bioreason.evaluation.baselines import _metrics

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(encoder_features(encoder, train, cells), [r["answer"] for r in train])
    return {k: _metrics(list(probe.predict(encoder_features(encoder, recs, cells))), recs)
            for k, recs in splits.items()}


def brief(scores: dict) -> dict:
    return {k: {m: round(v[m], 4) for m in ("n", "accuracy", "accuracy_lo", "accuracy_hi")}
            for k, v in scores.items() if isinstance(v, dict) and "accuracy" in v}


def measure(dataset: str) -> dict:
    from bioreason.data.tasks import open_task, task_folder
    from bioreason.encoders.rna import ExpressionEncoder
    from bioreason.encoders.scanpy_pca import ScanpyPCAEncoder
    from bioreason.evaluation.baselines import input_probe_scores, majority_scores

    data, cells = open_task(dataset)
    train = [dict(r) for r in data["train"]]
    splits = {k: [dict(r) for r in data[s]] for k, s in KEYS.items()}
    genes = [str(g) for g in cells.var_names]
    out = {"dataset": dataset, "train_records": len(train), "majority": brief(majority_scores(train, splits)),
           "input_probe": brief(input_probe_scores(train, splits, cells))}
    pca = ScanpyPCAEncoder.from_source(task_folder(dataset))
    out["input_scale"] = pca.options["input_scale"]
    out["scanpy_pca_probe"] = brief(regression(pca, train, splits, cells))
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        mlp = ExpressionEncoder.from_source(None, genes=genes)
        out[f"expression_mlp_probe_seed{seed}"] = brief(regression(mlp, train, splits, cells))
    return out


def main(datasets: list[str]) -> None:
    results = [measure(d) for d in datasets]
    with open(os.path.join(HERE, "probes.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=1)
    for r in results:
        print(r["dataset"], r["input_scale"])
        for name in [k for k in r if isinstance(r[k], dict)]:
            print(f"  {name}: " + "  ".join(f"{k} {v['accuracy']:.3f} [{v['accuracy_lo']:.3f}, {v['accuracy_hi']:.3f}]"
                                          f" n={v['n']}" for k, v in r[name].items()))


if __name__ == "__main__":
    main(sys.argv[1:])
