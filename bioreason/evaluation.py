"""In-domain / out-of-domain evaluation of a BioReason model on a task dataset.

Two scorers over the closed `label_set`:
- `likelihood`: the label whose `<answer>label</answer>` continuation has the highest summed log-probability after the
  prompt and an empty think block (cheap, no sampling, robust for small models);
- `generate`: greedy generation parsed by `bioreason.data.chat.parse_answer` (the parser rewards use), which also
  gives the answer-format rate.
Metrics: accuracy, macro-F1 and per-class F1 over the label set (an unparseable answer counts as wrong).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bioreason.data.chat import modality_inputs, normalize_label, parse_answer, to_messages

EMPTY_THINK = "<think>\n\n</think>\n<answer>"


def prompt_text(processor, record: dict) -> str:
    return processor.tokenizer.apply_chat_template(to_messages(record, with_answer=False), tokenize=False,
                                                   add_generation_prompt=True)


@torch.no_grad()
def predict_likelihood(model, processor, record: dict, cells=None) -> str:
    labels = list(record["label_set"])
    prefix = prompt_text(processor, record) + EMPTY_THINK
    items = modality_inputs(record, cells)
    repeated = {m: v * len(labels) for m, v in items.items()}
    texts = [prefix + label + "</answer>" for label in labels]
    batch = processor(text=texts, padding_side="right", **repeated).to(model.device)
    n_prefix = processor(text=[prefix], padding_side="right", **items)["input_ids"].shape[1]
    logits = model(**batch).logits.float()
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["attention_mask"][:, 1:].bool().clone()
    mask[:, : n_prefix - 2] = False  # score the continuation (and a token merged across the boundary, if any)
    scores = (logps * mask).sum(-1)
    return labels[int(scores.argmax())]


@torch.no_grad()
def predict_generate(model, processor, records: Sequence[dict], cells=None, max_new_tokens: int = 64) -> list[str]:
    texts = [prompt_text(processor, r) for r in records]
    items: dict[str, list] = {}
    for r in records:
        for m, v in modality_inputs(r, cells).items():
            items.setdefault(m, []).extend(v)
    batch = processor(text=texts, padding_side="left", **items).to(model.device)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def classification_metrics(predictions: Sequence[str | None], golds: Sequence[str], label_set: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and per-class F1 (`None` predictions are wrong for every class)."""
    golds_n = [normalize_label(g) for g in golds]
    preds_n = [normalize_label(p) if p is not None else None for p in predictions]
    per_class = {}
    for label in label_set:
        lab = normalize_label(label)
        tp = sum(p == lab and g == lab for p, g in zip(preds_n, golds_n, strict=True))
        fp = sum(p == lab and g != lab for p, g in zip(preds_n, golds_n, strict=True))
        fn = sum(p != lab and g == lab for p, g in zip(preds_n, golds_n, strict=True))
        per_class[label] = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    present = [lab for lab in label_set if normalize_label(lab) in golds_n]
    return {
        "n": len(golds_n),
        "accuracy": float(np.mean([p == g for p, g in zip(preds_n, golds_n, strict=True)])) if golds_n else 0.0,
        "macro_f1": float(np.mean([per_class[lab] for lab in present])) if present else 0.0,
        "per_class_f1": per_class,
    }


def evaluate_records(model, processor, records: Sequence[dict], mode: str = "likelihood", cells=None,
                     batch_size: int = 8, max_new_tokens: int = 64) -> dict:
    """Metrics and per-example predictions for a list of records."""
    was_training = model.training
    model.eval()
    try:
        if mode == "likelihood":
            predictions = [predict_likelihood(model, processor, r, cells) for r in records]
            formats = None
        elif mode == "generate":
            texts = []
            for start in range(0, len(records), batch_size):
                texts += predict_generate(model, processor, records[start: start + batch_size], cells, max_new_tokens)
            parsed = [parse_answer(t) for t in texts]
            predictions = [p.answer for p in parsed]
            formats = [p.well_formed for p in parsed]
        else:
            raise ValueError(f"mode must be 'likelihood' or 'generate', got {mode!r}")
    finally:
        model.train(was_training)
    label_set = list(records[0]["label_set"]) if records else []
    metrics = classification_metrics(predictions, [r["answer"] for r in records], label_set)
    if formats is not None:
        metrics["format_rate"] = float(np.mean(formats)) if formats else 0.0
    metrics["predictions"] = [{"id": r["id"], "answer": r["answer"], "prediction": p}
                              for r, p in zip(records, predictions, strict=True)]
    return metrics


def sample_split(dataset, split: str, max_examples: int | None, seed: int = 0) -> list[dict]:
    ds = dataset[split]
    if max_examples is not None and len(ds) > max_examples:
        ds = ds.shuffle(seed=seed).select(range(max_examples))
    return [dict(r) for r in ds]


__all__ = ["classification_metrics", "evaluate_records", "predict_generate", "predict_likelihood", "sample_split"]
