"""The jaspar_tf_class_1kb probe at the encoder's fixed initialisation, its features drawn in eval mode (the pipeline's
probe since `b0e21e6`) and, as before that commit, in train mode (dropout 0.1) under three torch seeds: is the
probe's "chance" in docs/BRIDGE.md the encoder's or the dropout's?

    D=docs/choose-jaspar_tf_class_1kb  # from the repository root
    PYTHONPATH=. .venv/bin/python $D/probe_eval_mode.py > $D/probe_eval_mode.json

Needs runs/encoders/nt-tiny (`bioreason encoder init nucleotide_transformer runs/encoders/nt-tiny`, sha256 in
encoder.sha256) and the built dataset (runs/data).
"""

import json
import sys

import torch

from bioreason.evaluation.baselines import _pooled_features, majority_scores, probe_scores
from bioreason.training.arguments import DataArguments, ModelArguments
from bioreason.training.prepare import load_model
from bioreason.training.task import eval_splits, load_task


def main() -> None:
    data = DataArguments(dataset="benchmark:jaspar_tf_class_1kb", data_root="runs/data", max_eval_examples=None)
    dataset, cells = load_task(data)
    train = [dict(r) for r in dataset["train"]]
    splits = eval_splits(dataset, data)
    model, processor = load_model(ModelArguments(
        encoders=["dna=nucleotide_transformer:runs/encoders/nt-tiny"], projector="mean", encoders_trainable=True,
        use_peft=False))
    out = {"n": {k: len(v) for k, v in splits.items()}, "majority": majority_scores(train, splits)}
    out["probe_eval_mode"] = probe_scores(model, processor, train, splits)
    import bioreason.evaluation.baselines as baselines

    model.train()  # the encoder is trainable, so it follows: dropout on, as the pipeline's probe was before b0e21e6

    @torch.no_grad()
    def train_mode_features(m, p, records, c=None, batch_size=32):
        return _pooled_features(m.model, p, records, c, batch_size)

    baselines.pooled_features = train_mode_features
    out["probe_train_mode"] = {}
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        out["probe_train_mode"][str(seed)] = probe_scores(model, processor, train, splits)
    json.dump(out, sys.stdout, indent=1, default=float)


if __name__ == "__main__":
    main()
