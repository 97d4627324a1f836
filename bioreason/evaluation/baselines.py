"""The baselines a biologist computes before trusting a multimodal LLM, reported next to every model score.

- `majority`: always answer the train split's most frequent label. A model at this line has learned the prior only.
- `probe`: a logistic regression (scikit-learn) on each frozen encoder's mean-pooled features, fit on the train split.
  It says what the encoder already knows; a model far below it does not read its encoder.
- `input_probe`: the same on a standard featurisation of the raw input (`bioreason.evaluation.input_probe`). Above
  the encoder probe, the encoder is the bottleneck; the encoder probe above the model, the bridge is.
- `reliance`: the model scored again with every example's modality inputs swapped for another example's of the same
  split (a fixed derangement), reported as accuracy(real) - accuracy(swapped). A model that ignores its encoder scores
  the same on swapped inputs: reliance near 0. A donor of the same label leaves a reading model right, so a model
  that reads its input fully still scores below its accuracy here;
- `reliance_cross_label`: the same with every donor drawn from another label. A model that reads its input fully
  scores about its accuracy (every swap turns a right answer wrong); one that ignores it about 0. This one separates
  "reads weakly" from "reads fully".
Both carry a bootstrap 95% interval over records (the per-record difference real - swapped is resampled).

Features come through the model's own encoders (`BioReasonModel.encode`), so the feature cache serves them and a
probe costs one encoder pass per unique input.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch

from bioreason.data.chat import modality_inputs, normalize_label
from bioreason.data.records import MODALITY_FIELDS
from bioreason.evaluation.intervals import mean_interval
from bioreason.evaluation.scoring import DEFAULT_NORMALIZATION, classification_metrics, evaluate_records, is_correct

# Answers for a list of records (a model's, or a toy's in tests): what the reliance passes score.
Predict = Callable[[Sequence[dict]], list[str | None]]


def majority_label(answers: Sequence[str]) -> str:
    """The most frequent answer; ties go to the label that sorts first, so the choice does not depend on order."""
    if not answers:
        raise ValueError("the majority baseline needs at least one train record")
    counts = Counter(answers)
    return min(counts, key=lambda label: (-counts[label], label))


def majority_scores(train: Sequence[dict], splits: dict[str, Sequence[dict]]) -> dict:
    """`{split: metrics}` of always answering the train split's majority label (and the label itself)."""
    label = majority_label([r["answer"] for r in train])
    out: dict = {"label": label}
    for name, records in splits.items():
        if records:
            out[name] = _metrics([label] * len(records), records)
    return out


def _metrics(predictions: Sequence[str], records: Sequence[dict]) -> dict:
    label_set = list(records[0]["label_set"]) if records[0].get("label_set") else sorted({r["answer"] for r in records})
    metrics = classification_metrics(predictions, [r["answer"] for r in records], label_set)
    return {k: metrics[k] for k in ("n", "accuracy", "accuracy_lo", "accuracy_hi", "macro_f1", "macro_f1_lo",
                                    "macro_f1_hi", "prediction_rate")}


@torch.no_grad()
def pooled_features(model, processor, records: Sequence[dict], cells=None, batch_size: int = 32) -> np.ndarray:
    """`[N, sum of encoder widths]`: each modality's encoder output mean-pooled over its valid positions (a record's
    items of one modality averaged), concatenated in the model's modality order; zeros for a modality a record lacks.
    Computed in eval mode (the model's mode restored after): a trainable encoder is in train mode when a run starts,
    and its dropout made the probe's features, so the probe, differ with the training seed."""
    inner = model.model if hasattr(model, "model") and hasattr(model.model, "encode") else model
    was_training = inner.training
    inner.eval()
    try:
        return _pooled_features(inner, processor, records, cells, batch_size)
    finally:
        inner.train(was_training)


def _pooled_features(inner, processor, records: Sequence[dict], cells, batch_size: int) -> np.ndarray:
    """`pooled_features` on the inner model, in whatever mode it is in."""
    device = next(inner.parameters()).device
    blocks = []
    for modality in inner.config.modalities:
        width = inner.encoders[modality].hidden_size
        block = np.zeros((len(records), width), dtype=np.float32)
        for start in range(0, len(records), batch_size):
            chunk = records[start: start + batch_size]
            items, owners = [], []
            for i, record in enumerate(chunk):
                for item in modality_inputs(record, cells).get(modality, []):
                    items.append(item)
                    owners.append(start + i)
            if not items:
                continue
            tensors, _ = processor.featurize(modality, items)
            emb, mask = inner.encode(modality, tensors["values"].to(device), tensors["mask"].to(device).bool())
            valid = mask.reshape(emb.shape[0], emb.shape[1], -1).any(-1).to(emb.dtype).unsqueeze(-1)
            pooled = ((emb * valid).sum(1) / valid.sum(1).clamp(min=1)).float().cpu().numpy()
            sums = np.zeros((len(chunk), width), dtype=np.float32)
            counts = np.zeros(len(chunk), dtype=np.float32)
            for row, owner in zip(pooled, owners, strict=True):
                sums[owner - start] += row
                counts[owner - start] += 1
            block[start: start + len(chunk)] = sums / np.maximum(counts, 1)[:, None]
        blocks.append(block)
    return np.concatenate(blocks, axis=1)


def probe_scores(model, processor, train: Sequence[dict], splits: dict[str, Sequence[dict]], cells=None,
                 seed: int = 0) -> dict:
    """`{split: metrics}` of a logistic regression (standardised features, L2, lbfgs) on the frozen encoders'
    mean-pooled features, fit on `train`."""
    from bioreason.evaluation.linear_probe import make_linear_probe

    answers = [r["answer"] for r in train]
    if len(set(answers)) < 2:
        raise ValueError(f"the probe needs at least two labels in the train split, got {sorted(set(answers))}")
    probe = make_linear_probe(seed)
    probe.fit(pooled_features(model, processor, train, cells), answers)
    out: dict = {"train_records": len(train)}
    for name, records in splits.items():
        if records:
            out[name] = _metrics(list(probe.predict(pooled_features(model, processor, records, cells))), records)
    return out


def input_probe_scores(train: Sequence[dict], splits: dict[str, Sequence[dict]], cells=None, seed: int = 0) -> dict:
    """`{split: metrics}` of the input-level probe (`bioreason.evaluation.input_probe`): a logistic regression on a
    standard featurisation of the raw input, fit on `train`; `features` names the featurisation per modality."""
    from bioreason.evaluation.input_probe import fit_input_probe

    predict, features = fit_input_probe(train, cells, seed=seed)
    out: dict = {"train_records": len(train), "features": features}
    for name, records in splits.items():
        if records:
            out[name] = _metrics(predict(records), records)
    return out


def baseline_scores(model, processor, train: Sequence[dict], splits: dict[str, Sequence[dict]], cells=None,
                    seed: int = 0) -> dict:
    """`{"majority": {...}, "probe": {...}, "input_probe": {...}}` on `splits` (the records the model itself is
    scored on)."""
    return {"majority": majority_scores(train, splits),
            "probe": probe_scores(model, processor, train, splits, cells, seed=seed),
            "input_probe": input_probe_scores(train, splits, cells, seed=seed)}


def derangement(n: int, seed: int = 0) -> list[int]:
    """A seeded permutation with no fixed point: position i takes the inputs of `perm[i] != i` (n >= 2)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 records, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    out = [0] * n
    for k in range(n):  # a single cycle through a shuffled order never maps a position to itself
        out[int(order[k])] = int(order[(k + 1) % n])
    return out


def cross_label_donors(records: Sequence[dict], seed: int = 0) -> list[int] | None:
    """For each record, a seeded random record of another label (whose input it will be given); None when some
    record's label is the only one in the list (no donor exists)."""
    labels = [normalize_label(r["answer"]) for r in records]
    rng = np.random.default_rng(seed)
    donors = []
    for label in labels:
        others = [j for j, other in enumerate(labels) if other != label]
        if not others:
            return None
        donors.append(others[int(rng.integers(len(others)))])
    return donors


def with_inputs_of(records: Sequence[dict], donors: Sequence[int]) -> list[dict]:
    """Copies of `records` whose modality inputs are those of `records[donors[i]]`; question, answer and label set
    stay."""
    return [{**r, **{m: records[j][m] for m in MODALITY_FIELDS if m in records[j]}} for r, j in zip(records, donors,
                                                                                                     strict=True)]


def swap_modality_inputs(records: Sequence[dict], seed: int = 0) -> list[dict]:
    """Copies of `records` whose modality inputs come from another record of the list (`derangement`)."""
    return with_inputs_of(records, derangement(len(records), seed))


def correct_of(predictions: Sequence[str | None], records: Sequence[dict]) -> np.ndarray:
    """1 / 0 per record: whether the prediction is the record's answer."""
    return np.array([is_correct(p, r["answer"]) for p, r in zip(predictions, records, strict=True)])


def model_predictor(model, processor, mode: str = "likelihood", cells=None, desc: str = "reliance",
                    normalization: str = DEFAULT_NORMALIZATION) -> Predict:
    """The model's answers for records, scored as `evaluate_records` scores them."""
    def predict(records: Sequence[dict]) -> list[str | None]:
        out = evaluate_records(model, processor, records, mode=mode, cells=cells, desc=desc,
                               normalization=normalization)
        return [p["prediction"] for p in out["predictions"]]

    return predict


def reliance_scores(predict: Predict, records: Sequence[dict], real_correct: Sequence[int], seed: int = 0) -> dict:
    """`reliance` (any other record's input) and `reliance_cross_label` (another label's), each accuracy(real) -
    accuracy(swapped) with its bootstrap interval, and the swapped accuracies. `real_correct`: 1 / 0 per record on
    the real inputs. `reliance_cross_label` is None where a split holds one label only."""
    if len(records) < 2:
        return {}
    real = np.asarray(real_correct, dtype=float)
    out: dict = {}
    for name, suffix, donors in (("reliance", "", derangement(len(records), seed)),
                                 ("reliance_cross_label", "_cross_label", cross_label_donors(records, seed))):
        if donors is None:
            out[name] = None
            continue
        swapped = correct_of(predict(with_inputs_of(records, donors)), records)
        difference = real - swapped
        lo, hi = mean_interval(difference, seed)
        out.update({f"accuracy_swapped{suffix}": float(swapped.mean()), name: float(difference.mean()),
                    f"{name}_lo": lo, f"{name}_hi": hi})
    return out


BASELINE_STYLE = {"majority": ":", "probe": "--", "input_probe": "-."}


def draw_baselines(ax, baselines: dict | None, keys: tuple[tuple[str, str], ...] = (("id", "C0"), ("ood", "C1"))):
    """On a matplotlib axis: a horizontal line per baseline and split, in the colour of the model's series of that
    split (`keys`: (metrics key, colour)), so every plot of a model carries the lines it must beat."""
    for name, result in (baselines or {}).items():
        for key, colour in keys:
            if "accuracy" in result.get(key, {}):
                ax.axhline(result[key]["accuracy"], color=colour, linestyle=BASELINE_STYLE.get(name, "-."),
                           linewidth=1, label=f"{name} ({key.split('_')[0].upper()})")


__all__ = ["Predict", "baseline_scores", "correct_of", "cross_label_donors", "derangement", "draw_baselines",
           "input_probe_scores", "majority_label", "majority_scores", "model_predictor", "pooled_features",
           "probe_scores", "reliance_scores", "swap_modality_inputs", "with_inputs_of"]
