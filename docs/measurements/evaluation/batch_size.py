"""Records scored per second by likelihood scoring at evaluation batch sizes 8, 16 and 32 (then 8 again, to see the
drift), on the quickstart's composed model (SmolLM2-135M + AntiBERTy, resampler 16) and 96 antibody_chain id_test
records, features cached, under bf16 autocast. Chose `evaluate_records`' default batch size (16).

    PYTHONPATH=. .venv/bin/python docs/measurements/evaluation/batch_size.py
"""

from __future__ import annotations

import time

import torch

from bioreason.evaluation.scoring import evaluate_records, sample_split
from bioreason.recipes.pipeline import ARGUMENTS
from bioreason.training.config import parse_arguments
from bioreason.training.prepare import load_model
from bioreason.training.task import load_task


def main() -> None:
    _, model_args, data = parse_arguments(ARGUMENTS, ["--config", "recipes/configs/quickstart.yaml"])
    dataset, cells = load_task(data)
    model, processor = load_model(model_args)
    model.eval()
    model.enable_feature_cache()
    records = sample_split(dataset, "id_test", None)[:96]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        evaluate_records(model, processor, records[:16], progress=False)  # warm-up: features, kernels
        for batch_size in (8, 16, 32, 8):
            start = time.time()
            evaluate_records(model, processor, records, batch_size=batch_size, progress=False)
            print(f"batch {batch_size}: {len(records) / (time.time() - start):.2f} records/s", flush=True)


if __name__ == "__main__":
    main()
