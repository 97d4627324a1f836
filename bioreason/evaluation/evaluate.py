"""Evaluate a saved model folder on a saved task dataset (`bioreason eval`), or a series of checkpoints as a curve
(`bioreason eval-curve`): the scores of `scoring` per split, each split's modality reliance, and the majority / probe
baselines of `baselines` beside them. Kept apart from `scoring` because it builds on both it and the baselines, which
score through it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch

from bioreason.data.records import EVAL_SPLITS
from bioreason.evaluation.baselines import baseline_scores, draw_baselines, model_predictor, reliance_scores
from bioreason.evaluation.scoring import (
    DEFAULT_NORMALIZATION,
    correct_vector,
    evaluate_records,
    multilabel_metrics,
    parse_obo,
    sample_split,
    split_labels,
)


def evaluate_model(model_dir: str, data_dir: str, splits: Sequence[str] = tuple(EVAL_SPLITS.values()),
                   mode: str = "likelihood", max_examples: int | None = None, ontology: str | None = None,
                   bf16: bool | str = "auto", seed: int = 0, baselines: bool = True, reliance: bool = True,
                   normalization: str = DEFAULT_NORMALIZATION) -> dict:
    """Metrics per split (with 95% intervals and prediction rates) and per-example predictions of a saved model on a
    task (a dataset folder, or `benchmark:NAME`, built under runs/data on first use); with `reliance`, each test
    split's modality reliance (both kinds); with `baselines`, the majority / probe baselines
    (`bioreason.evaluation.baselines`) on the same records."""
    from transformers import AutoModelForCausalLM, AutoProcessor

    import bioreason  # noqa: F401
    from bioreason.data.tasks import open_task
    from bioreason.model.precision import choose_bf16

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    # frozen encoders run once per unique input: the reliance passes score the same inputs in another order
    cache = model.enable_feature_cache()
    precision = choose_bf16(bf16, model.device.type)
    processor = AutoProcessor.from_pretrained(model_dir)
    dataset, cells = open_task(data_dir)
    parents = parse_obo(ontology) if ontology else None
    results: dict = {"model": model_dir, "data": data_dir, "mode": mode, "precision": precision.as_dict(),
                     "splits": {}, "predictions": {}}
    scored: dict[str, list[dict]] = {}
    autocast = torch.autocast(device_type=model.device.type, dtype=torch.bfloat16, enabled=precision.bf16)
    sizes = {split: len(dataset[split]) for split in splits}
    print("scoring " + ", ".join(f"{split} {min(n, max_examples or n)} of {n}" for split, n in sizes.items())
          + (" records (--max-examples N scores a fixed, label-stratified subset of a larger split)"
             if max_examples is None and max(sizes.values(), default=0) > 1000 else " records"), flush=True)
    for split in splits:
        records = sample_split(dataset, split, max_examples, seed=seed)
        if not records:
            results["splits"][split] = {"n": 0}
            continue
        scored[split] = records
        with autocast:
            metrics = evaluate_records(model, processor, records, mode=mode, cells=cells, desc=f"evaluate {split}",
                                       normalization=normalization)
            if reliance and split != "validation":
                predict = model_predictor(model, processor, mode=mode, cells=cells, desc=f"reliance {split}",
                                          normalization=normalization)
                metrics.update(reliance_scores(predict, records, correct_vector(metrics["predictions"]), seed=seed))
        predictions = metrics.pop("predictions")
        if parents is not None:
            metrics.update(multilabel_metrics([split_labels(p["prediction"]) for p in predictions],
                                              [split_labels(r["answer"]) for r in records], parents))
        results["splits"][split] = metrics
        results["predictions"][split] = predictions
    results["feature_cache"] = cache.stats()
    if baselines and scored and "train" in dataset and parents is None:
        with autocast:
            results["baselines"] = baseline_scores(model, processor, [dict(r) for r in dataset["train"]], scored,
                                                   cells, seed=seed)
    return results


def evaluate_curve(models: Sequence[str], data_dir: str, labels: Sequence[str] | None = None, out: str = ".",
                   **kwargs) -> list[dict]:
    """Evaluate checkpoints in order (e.g. SFT after 1, 2, 4, 8, 16 epochs); write curve.json and curve.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else [os.path.basename(m.rstrip("/")) for m in models]
    if len(labels) != len(models):
        raise ValueError(f"{len(labels)} labels for {len(models)} models")
    points, baselines = [], None
    for i, (label, model_dir) in enumerate(zip(labels, models, strict=True)):
        result = evaluate_model(model_dir, data_dir, baselines=i == 0, **kwargs)  # baselines once: the first model's
        baselines = baselines or result.get("baselines")
        points.append({"label": label, "model": model_dir, **result["splits"]})
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "curve.json"), "w", encoding="utf-8") as fh:
        json.dump(points, fh, indent=2)
    with open(os.path.join(out, "curve_baselines.json"), "w", encoding="utf-8") as fh:
        json.dump(baselines or {}, fh, indent=2)
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, name in ((EVAL_SPLITS["id"], "ID"), (EVAL_SPLITS["ood"], "OOD")):
        ax.plot(labels, [p[split].get("accuracy", float("nan")) for p in points], "o-", label=name)
    draw_baselines(ax, baselines, keys=((EVAL_SPLITS["id"], "C0"), (EVAL_SPLITS["ood"], "C1")))
    ax.set_xlabel("checkpoint")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curve.png"), dpi=120)
    plt.close(fig)
    return points


__all__ = ["evaluate_curve", "evaluate_model"]
