"""How much likelihood scoring favours a label before the model reads anything: the prediction rate per label,
accuracy and macro-F1 under summed and mean (per-token) label log-probabilities, on the validation split.

For each benchmark's pipeline config, the model it composes before training (`base`, untrained projector), and any
trained run folders given after it (`final/` of a pipeline run on the same benchmark). Writes one JSON line per
(model, normalization) to the output file.

    PYTHONPATH=. .venv/bin/python docs/measurements/evaluation/label_bias.py OUT.jsonl CONFIG [--no-base] [RUN_DIR ...]

`--no-base` scores only the run folders (the base model's lines are already in the file).
"""

from __future__ import annotations

import json
import sys
import time

import torch

from bioreason.evaluation.intervals import format_difference, paired_comparison
from bioreason.evaluation.scoring import correct_vector, evaluate_records, sample_split
from bioreason.model.precision import choose_bf16
from bioreason.recipes.pipeline import ARGUMENTS
from bioreason.training.config import parse_arguments
from bioreason.training.prepare import load_model
from bioreason.training.task import load_task


def score(model, processor, records, cells, normalization: str) -> dict:
    start = time.time()
    metrics = evaluate_records(model, processor, records, cells=cells, normalization=normalization, progress=False)
    return {k: metrics[k] for k in ("n", "accuracy", "accuracy_lo", "accuracy_hi", "macro_f1", "prediction_rate")} | {
        "correct": correct_vector(metrics["predictions"]), "seconds": round(time.time() - start, 1)}


def main(out: str, config: str, runs: list[str], base: bool = True) -> None:
    pipeline, model_args, data = parse_arguments(ARGUMENTS, ["--config", config])
    dataset, cells = load_task(data)
    records = sample_split(dataset, "validation", None)
    precision = choose_bf16("auto", "cpu")
    targets = [("base", model_args)] * base + [(run, None) for run in runs]
    with open(out, "a", encoding="utf-8") as fh:
        for name, args in targets:
            if args is None:
                from dataclasses import replace

                args = replace(model_args, model_name_or_path=f"{name}/final")
            model, processor = load_model(args)
            model.eval()
            correct = {}
            for normalization in ("sum", "mean"):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.bf16):
                    row = {"benchmark": data.dataset, "model": name, "normalization": normalization,
                           "precision": precision.name, **score(model, processor, records, cells, normalization)}
                correct[normalization] = row.pop("correct")
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                print(row, flush=True)
            paired = paired_comparison(correct["sum"], correct["mean"])  # mean minus sum, the same records
            row = {"benchmark": data.dataset, "model": name, "mean_minus_sum": paired,
                   "correct": correct}  # per record, for pooling models (seeds) into one paired comparison
            fh.write(json.dumps(row) + "\n")
            print(f"{name}: mean minus sum {format_difference(paired)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [a for a in sys.argv[3:] if a != "--no-base"], base="--no-base" not in sys.argv)
