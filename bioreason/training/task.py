"""A stage's task: its dataset and train draw, and the scores on the held-out splits (the model's, and the majority /
probe baselines on the same records)."""

from __future__ import annotations

import torch

from bioreason.data.records import EVAL_SPLITS, TEST_SPLITS
from bioreason.evaluation.scoring import evaluate_records, sample_split
from bioreason.training.arguments import DataArguments
from bioreason.training.faults import kill_point
from bioreason.training.prepare import base_model


def load_task(data: DataArguments):
    """(DatasetDict, cells AnnData or None) of the config's dataset (`bioreason.data.tasks.open_task`)."""
    from bioreason.data.tasks import open_task

    return open_task(data.dataset, data.data_root, data.task_seed)


def train_records(dataset, data: DataArguments):
    """The train records a stage sees: `max_train_examples` of them (default all), label-balanced when
    `balance_labels` and the task has a closed label set, else a seeded shuffle."""
    ds = dataset["train"]
    n = len(ds) if data.max_train_examples is None else data.max_train_examples
    if data.balance_labels and len(ds) and ds[0].get("label_set") and len(set(ds["answer"])) > 1:
        from bioreason.data.balance import balanced_indices

        return ds.select(balanced_indices(ds["answer"], n, seed=data.task_seed))
    ds = ds.shuffle(seed=data.task_seed)
    return ds.select(range(min(n, len(ds))))


def autocast_for(model, bf16: bool) -> torch.autocast:
    """bf16 autocast on the model's device when `bf16` (the run's precision decision), else a no-op context."""
    return torch.autocast(device_type=next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=bf16)


def evaluate_splits(model, processor, dataset, cells, data: DataArguments, bf16: bool = False,
                    keys: tuple[str, ...] = tuple(EVAL_SPLITS), reliance: tuple[str, ...] = tuple(TEST_SPLITS)) -> dict:
    """`{key: metrics}` on the held-out splits `keys` (validation, id, ood): accuracy and macro-F1 with intervals,
    prediction rates, and `correct` (1 / 0 per record, in `eval_splits` order, for paired comparisons); on the
    `reliance` keys also both reliance figures. `bf16` runs them under bf16 autocast (on CPUs with AMX /
    AVX-512-BF16 that is several times faster than fp32)."""
    kill_point("evaluate")
    with autocast_for(model, bf16):
        return _evaluate_splits(model, processor, dataset, cells, data, keys, reliance)


def eval_splits(dataset, data: DataArguments, keys: tuple[str, ...] = tuple(EVAL_SPLITS)) -> dict[str, list[dict]]:
    """`{"validation": records, "id": records, "ood": records}`: the examples every score of a run is computed on
    (whole splits, or the fixed label-stratified subsets of `max_eval_examples`)."""
    return {key: sample_split(dataset, EVAL_SPLITS[key], data.max_eval_examples, seed=data.task_seed)
            for key in keys}


def _evaluate_splits(model, processor, dataset, cells, data: DataArguments, keys: tuple[str, ...],
                     reliance: tuple[str, ...]) -> dict:
    from bioreason.evaluation.baselines import model_predictor, reliance_scores
    from bioreason.evaluation.scoring import correct_vector

    out = {}
    for key, records in eval_splits(dataset, data, keys).items():
        if not records:
            out[key] = {"n": 0}
            continue
        split = EVAL_SPLITS[key]
        metrics = evaluate_records(base_model(model), processor, records, mode=data.eval_mode, cells=cells,
                                   desc=f"evaluate {split}", normalization=data.likelihood_normalization)
        metrics["correct"] = correct_vector(metrics.pop("predictions"))
        if key in reliance:
            predict = model_predictor(base_model(model), processor, mode=data.eval_mode, cells=cells,
                                      desc=f"reliance {split}", normalization=data.likelihood_normalization)
            metrics.update(reliance_scores(predict, records, metrics["correct"], seed=data.task_seed))
        out[key] = metrics
    return out


def baseline_metrics(model, processor, dataset, cells, data: DataArguments, bf16: bool = False,
                     keys: tuple[str, ...] = tuple(EVAL_SPLITS)) -> dict:
    """`{"majority": {...}, "probe": {...}}` on the same held-out examples as the model's scores (the splits `keys`);
    the probe is fit on the whole train split, on the model's encoders (through its feature cache, under the run's
    autocast so training hits the same entries)."""
    from bioreason.evaluation.baselines import baseline_scores

    with autocast_for(model, bf16):
        return baseline_scores(base_model(model), processor, [dict(r) for r in dataset["train"]],
                               eval_splits(dataset, data, keys), cells, seed=data.task_seed)
