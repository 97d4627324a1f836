"""In-domain / out-of-domain evaluation of a BioReason model on a task dataset.

Two scorers over the closed `label_set`:
- `likelihood`: the label whose `<answer>label</answer>` continuation has the highest log-probability after the
  prompt and an empty think block (cheap, no sampling, robust for small models). `normalization` says how a row's
  token log-probabilities combine: `mean` (per token; the default) or `sum`. A sum favours labels of fewer tokens
  before the model reads anything ("bHLH" over "C2H2 zinc finger"); docs/EVALUATION.md has the measurement;
- `generate`: greedy generation parsed by `bioreason.data.chat.parse_answer` (the parser rewards use), which also
  gives the answer-format rate.
Metrics: accuracy (95% Wilson interval), macro-F1 (95% bootstrap interval), per-class F1 and the rate at which each
label is predicted (a collapse to one answer shows at a glance) over the label set; an unparseable answer counts as
wrong. Held-out splits are scored whole, or as a fixed, label-stratified subset (`sample_split`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from bioreason.data.chat import modality_inputs, normalize_label, parse_answer, to_messages

EMPTY_THINK = "<think>\n\n</think>\n<answer>"
NORMALIZATIONS = ("mean", "sum")
DEFAULT_NORMALIZATION = "mean"
# How a pipeline stage's record is scored, beyond the model and the config: raise it when a change moves scores, so a
# stage-cache entry scored the old way is not served to a run scored the new way. 2: each stage scored with its
# adapter merged (a8afcca), as the saved model is.
SCORING_VERSION = 2


def combine_label_scores(logps: torch.Tensor, mask: torch.Tensor, normalization: str) -> torch.Tensor:
    """One score per label row from its token log-probabilities `[rows, T]` over the scored positions `mask`: their
    sum, or their mean (`normalization="mean"`), which does not favour labels of fewer tokens."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
    total = (logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if normalization == "mean" else total


def prompt_text(processor, record: dict) -> str:
    return processor.tokenizer.apply_chat_template(to_messages(record, with_answer=False), tokenize=False,
                                                   add_generation_prompt=True)


@torch.no_grad()
def predict_likelihood(model, processor, record: dict, cells=None, normalization: str = DEFAULT_NORMALIZATION) -> str:
    """One record at a time, every label row through the whole model and a full-vocabulary log-softmax at every
    position: the reference that `likelihood_scores` (batched, prompt once per record) is tested and benchmarked
    against."""
    labels = list(record["label_set"])
    prefix = prompt_text(processor, record) + EMPTY_THINK
    items = modality_inputs(record, cells)
    repeated = {m: v * len(labels) for m, v in items.items()}
    texts = [prefix + label + "</answer>" for label in labels]
    batch = processor(text=texts, padding_side="right", **repeated).to(model.device)
    rows = [ids[m.bool()].tolist() for ids, m in zip(batch["input_ids"], batch["attention_mask"], strict=True)]
    # the first scored token: where the label rows start to differ (a token merged across the boundary included)
    first = max(min(_common_prefix(rows), min(len(r) for r in rows) - 1), 1)
    logits = model(**batch).logits.float()
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["attention_mask"][:, 1:].bool().clone()
    mask[:, : first - 1] = False  # logps[:, k] is token k + 1's
    return labels[int(combine_label_scores(logps, mask, normalization).argmax())]


def batch_items(records: Sequence[dict], cells=None) -> dict[str, list]:
    """Every record's modality inputs as one flat list per modality, in record order (what the processor takes)."""
    items: dict[str, list] = {}
    for r in records:
        for m, v in modality_inputs(r, cells).items():
            items.setdefault(m, []).extend(v)
    return items


def _common_prefix(rows: list[list[int]]) -> int:
    n = min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != rows[0][i] for r in rows[1:]):
            return i
    return n


def _pad_rows(rows: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span] = torch.tensor(row)
            mask[i, span] = 1
    return ids, mask


@torch.no_grad()
def likelihood_scores(model, processor, records: Sequence[dict], cells=None,
                      normalization: str = DEFAULT_NORMALIZATION) -> list[list[float]]:
    """For each record, the mean (or summed, `normalization="sum"`) log-probability of each label's `label</answer>`
    continuation after its prompt and an empty think block, with the records in one batch and no prompt work
    repeated.

    Three passes share one KV cache: the text every prompt of the batch starts with (system prompt and the start of
    the user turn, up to the first modality token) runs once; each record's own prompt (its encoder features and
    question) runs once, left-padded after it; each label row runs only its continuation on a copy of its record's
    cache. The LM head projects only the scored positions, in fp32 (`bioreason.model.lm_head.token_logprobs`). A
    row's score combines the tokens after the longest token prefix the record's label rows share, so labels compare on
    what differs (a token merged across the prompt / label boundary is scored). Scores equal `predict_likelihood`'s
    (up to float error) under either normalization."""
    from bioreason.model.lm_head import token_logprobs
    from bioreason.model.rollout import generation_position_ids

    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
    for r in records:
        if not r.get("label_set"):
            raise ValueError(f"record {r.get('id')!r} has no label_set: likelihood scoring ranks a closed set of "
                             "labels; use mode='generate' for open answers")
    tok = processor.tokenizer
    prefixes = [prompt_text(processor, r) + EMPTY_THINK for r in records]
    items = batch_items(records, cells)
    expanded, modality = processor.prepare(prefixes, **items)
    label_sets = [list(r["label_set"]) for r in records]
    rows = tok([e + label + "</answer>" for e, labels in zip(expanded, label_sets, strict=True) for label in labels],
               add_special_tokens=True)["input_ids"]
    owner = [i for i, labels in enumerate(label_sets) for _ in labels]
    firsts = [owner.index(i) for i in range(len(records))]
    # Each record's prompt: all tokens its label rows share but the last, which starts the continuation
    starts = []
    for i, labels in enumerate(label_sets):
        group = rows[firsts[i]: firsts[i] + len(labels)]
        starts.append(max(min(_common_prefix(group), min(len(r) for r in group) - 1), 1) - 1)
    # The batch's shared text: the prompts' common tokens before the first modality token (features differ there)
    prompts = [rows[firsts[i]][: starts[i]] for i in range(len(records))]
    shared = _common_prefix(prompts) if prompts else 0
    special = set(model.config.placeholder_token_ids())
    shared = next((k for k, t in enumerate(prompts[0][:shared]) if t in special), shared)
    shared = shared if len(records) > 1 and shared >= 2 else 0
    device = model.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    cache, mask = None, torch.zeros((len(records), 0), dtype=torch.long, device=device)
    if shared:
        ids = torch.tensor([prompts[0][:shared]], device=device)
        cache = model.model(input_ids=ids, use_cache=True).cache
        cache.batch_select_indices(torch.zeros(len(records), dtype=torch.long, device=device))
        mask = torch.ones((len(records), shared), dtype=torch.long, device=device)
    ids, own_mask = (t.to(device) for t in _pad_rows([p[shared:] for p in prompts], pad, left=True))
    mask = torch.cat([mask, own_mask], 1)
    positions = generation_position_ids(mask)[:, shared:]
    cache = model.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                        **{k: v.to(device) for k, v in modality.items()}).cache
    inverse = torch.tensor(owner, device=device)
    cache.batch_select_indices(inverse)
    # Continuations: right-padded, positions carrying on from each record's prompt
    cont_ids, cont_mask = (t.to(device) for t in _pad_rows([row[starts[i]:] for row, i in zip(rows, owner,
                                                                                                strict=True)],
                                                            pad, left=False))
    positions = torch.tensor([starts[i] for i in owner], device=device)[:, None] + torch.arange(cont_ids.shape[1],
                                                                                                 device=device)
    hidden = model.model(input_ids=cont_ids, attention_mask=torch.cat([mask[inverse], cont_mask], 1),
                         position_ids=positions, cache=cache, use_cache=True).last_hidden_state
    scored = cont_mask[:, 1:].bool()
    head = model.get_output_embeddings()
    logps = token_logprobs(hidden[:, :-1][scored], head.weight, head.bias, cont_ids[:, 1:][scored])["log_probs"]
    per_token = logps.new_zeros(scored.shape).masked_scatter(scored, logps)
    per_row = combine_label_scores(per_token, scored, normalization).tolist()
    return [per_row[firsts[i]: firsts[i] + len(labels)] for i, labels in enumerate(label_sets)]


@torch.no_grad()
def predict_generate(model, processor, records: Sequence[dict], cells=None, max_new_tokens: int = 64) -> list[str]:
    texts = [prompt_text(processor, r) for r in records]
    items = batch_items(records, cells)
    batch = processor(text=texts, padding_side="left", **items).to(model.device)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def classification_metrics(predictions: Sequence[str | None], golds: Sequence[str], label_set: Sequence[str],
                           seed: int = 0) -> dict:
    """Accuracy with its Wilson interval, macro-F1 with its bootstrap interval (`seed`), per-class F1, and
    `prediction_rate`: the share of records given each label (`None` predictions, wrong for every class, are counted
    under "(none)")."""
    from bioreason.evaluation.intervals import macro_f1_interval, wilson_interval

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
    n = len(golds_n)
    hits = sum(p == g for p, g in zip(preds_n, golds_n, strict=True))
    ids = {normalize_label(lab): i for i, lab in enumerate(label_set)}
    gold_ids = np.array([ids.get(g, -2) for g in golds_n], dtype=int)
    pred_ids = np.array([ids.get(p, -1) if p is not None else -1 for p in preds_n], dtype=int)
    accuracy_lo, accuracy_hi = wilson_interval(hits, n)
    macro_lo, macro_hi = macro_f1_interval(pred_ids, gold_ids, len(label_set), seed=seed)
    rates = {label: sum(p == normalize_label(label) for p in preds_n) / n if n else 0.0 for label in label_set}
    other = 1.0 - sum(rates.values()) if n else 0.0
    if other > 1e-12:
        rates["(none)"] = other
    return {
        "n": n,
        "accuracy": hits / n if n else 0.0, "accuracy_lo": accuracy_lo, "accuracy_hi": accuracy_hi,
        "macro_f1": float(np.mean([per_class[lab] for lab in present])) if present else 0.0,
        "macro_f1_lo": macro_lo, "macro_f1_hi": macro_hi,
        "per_class_f1": per_class,
        "prediction_rate": rates,
    }


def is_correct(prediction: str | None, answer: str) -> int:
    """1 when a prediction is the answer (after label normalisation), else 0; an unparsed answer (None) is wrong."""
    return int(prediction is not None and normalize_label(prediction) == normalize_label(answer))


def correct_vector(predictions: Sequence[dict]) -> list[int]:
    """1 / 0 per record of `evaluate_records`' predictions: the input of paired comparisons and reliance."""
    return [is_correct(p["prediction"], p["answer"]) for p in predictions]


def evaluate_records(model, processor, records: Sequence[dict], mode: str = "likelihood", cells=None,
                     batch_size: int = 16, max_new_tokens: int = 64, desc: str = "evaluate",
                     progress: bool = True, normalization: str = DEFAULT_NORMALIZATION) -> dict:
    """Metrics and per-example predictions for a list of records, `batch_size` records at a time, with a progress
    bar over examples (`desc` names it). `normalization`: how likelihood scoring combines a label's tokens."""
    from tqdm.auto import tqdm

    if mode not in ("likelihood", "generate"):
        raise ValueError(f"mode must be 'likelihood' or 'generate', got {mode!r}")
    was_training = model.training
    model.eval()
    predictions: list[str | None] = []
    formats: list[bool] | None = None if mode == "likelihood" else []
    try:
        with tqdm(total=len(records), desc=desc, unit="ex", disable=not progress or not records) as bar:
            for start in range(0, len(records), batch_size):
                chunk = records[start: start + batch_size]
                if mode == "likelihood":
                    scored = likelihood_scores(model, processor, chunk, cells, normalization=normalization)
                    for record, scores in zip(chunk, scored, strict=True):
                        predictions.append(list(record["label_set"])[max(range(len(scores)), key=scores.__getitem__)])
                else:
                    parsed = [parse_answer(t) for t in predict_generate(model, processor, chunk, cells,
                                                                        max_new_tokens)]
                    predictions += [p.answer for p in parsed]
                    formats += [p.well_formed for p in parsed]
                bar.update(len(chunk))
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
    """The records of `split` to score: all of them, or, where the split holds more than `max_examples`, a fixed
    label-stratified subset of that size (each label keeps its share, largest remainders first; seeded), in the
    split's order. The same `seed` gives the same records to every model, so their scores pair."""
    ds = dataset[split]
    if max_examples is None or len(ds) <= max_examples:
        return [dict(r) for r in ds]
    answers = ds["answer"]
    by_label: dict[str, list[int]] = {}
    for i, answer in enumerate(answers):
        by_label.setdefault(answer, []).append(i)
    exact = {label: len(rows) * max_examples / len(ds) for label, rows in by_label.items()}
    take = {label: int(share) for label, share in exact.items()}
    for label in sorted(exact, key=lambda lab: (-(exact[lab] - take[lab]), lab))[: max_examples - sum(take.values())]:
        take[label] += 1
    rng = np.random.default_rng(seed)
    chosen = sorted(i for label in sorted(by_label) for i in rng.permutation(by_label[label])[: take[label]])
    return [dict(r) for r in ds.select(chosen)]


# Multi-label tasks with an ontology (GO-style) -----------------------------------------------------------------------
def parse_obo(path: str) -> dict[str, set[str]]:
    """term -> direct parents over `is_a` and `relationship: part_of` from an OBO file."""
    parents: dict[str, set[str]] = {}
    term = None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("!")[0].strip()
            if line.startswith("["):
                term = None
            elif line.startswith("id:"):
                term = line[3:].strip()
                parents.setdefault(term, set())
            elif term and line.startswith("is_a:"):
                parents[term].add(line[5:].strip())
            elif term and line.startswith("relationship:") and line.split()[1] == "part_of":
                parents[term].add(line.split()[2])
    return parents


def propagate(labels: set[str], parents: dict[str, set[str]]) -> set[str]:
    """The labels with all their ancestors (the true-path rule)."""
    out, stack = set(), list(labels)
    while stack:
        term = stack.pop()
        if term not in out:
            out.add(term)
            stack.extend(parents.get(term, ()))
    return out


def split_labels(text: str | None) -> set[str]:
    return {x.strip() for x in re.split(r"[,;\n]", text or "") if x.strip()}


def multilabel_metrics(predictions: Sequence[set[str]], golds: Sequence[set[str]],
                       parents: dict[str, set[str]] | None = None) -> dict:
    """Micro-F1 and mean per-example F1, after propagating both sides up the ontology when one is given."""
    if parents is not None:
        predictions = [propagate(p, parents) for p in predictions]
        golds = [propagate(g, parents) for g in golds]
    tp = sum(len(p & g) for p, g in zip(predictions, golds, strict=True))
    n_pred, n_gold = sum(map(len, predictions)), sum(map(len, golds))
    micro = 0.0 if tp == 0 else 2 * tp / (n_pred + n_gold)
    per_example = [0.0 if not (p & g) else 2 * len(p & g) / (len(p) + len(g)) for p, g in
                   zip(predictions, golds, strict=True)]
    return {"multilabel_micro_f1": micro, "multilabel_example_f1": float(np.mean(per_example)) if per_example else 0.0}


__all__ = ["DEFAULT_NORMALIZATION", "NORMALIZATIONS", "classification_metrics", "combine_label_scores",
           "correct_vector", "evaluate_records", "likelihood_scores", "multilabel_metrics", "parse_obo",
           "predict_generate", "predict_likelihood", "propagate", "sample_split", "split_labels"]
