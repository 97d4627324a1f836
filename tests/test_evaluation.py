"""Evaluation: metrics against hand-computed values; both scorers run on a tiny model."""

from __future__ import annotations

import pytest
from conftest import tiny_model

from bioreason.evaluation.scoring import classification_metrics, evaluate_records


def test_metrics_by_hand():
    golds = ["a", "a", "b", "c"]
    preds = ["a", "b", "b", None]
    m = classification_metrics(preds, golds, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.5)
    # a: tp1 fp0 fn1 -> 2/3; b: tp1 fp1 fn0 -> 2/3; c: tp0 -> 0
    assert m["per_class_f1"] == pytest.approx({"a": 2 / 3, "b": 2 / 3, "c": 0.0})
    assert m["macro_f1"] == pytest.approx(4 / 9)


def records():
    return [{"id": f"r{i}", "question": "<protein>\nWhich? Answer with one of: heavy, kappa.", "answer": a,
             "label_set": ["heavy", "kappa"], "protein": [s], "dna": [], "rna": [], "reasoning": ""}
            for i, (a, s) in enumerate([("heavy", "EVQLVESGG"), ("kappa", "DIQMTQSPS"), ("kappa", "EIVLTQSPG")])]


@pytest.mark.parametrize("mode", ["likelihood", "generate"])
def test_scorers_run_and_report(mode):
    model, processor = tiny_model("esm2")
    m = evaluate_records(model, processor, records(), mode=mode, max_new_tokens=4)
    assert m["n"] == 3 and len(m["predictions"]) == 3
    # the reported accuracy is the share of predictions equal to the answers, and its rates are those predictions'
    right = sum(p["prediction"] == p["answer"] for p in m["predictions"])
    assert m["accuracy"] == pytest.approx(right / 3)
    assert m["accuracy_lo"] <= m["accuracy"] <= m["accuracy_hi"]
    for label in ("heavy", "kappa"):
        assert m["prediction_rate"][label] == pytest.approx(sum(p["prediction"] == label for p in m["predictions"]) / 3)
    if mode == "likelihood":
        assert all(p["prediction"] in {"heavy", "kappa"} for p in m["predictions"])
    else:
        assert m["format_rate"] == 0.0  # an untrained tiny model never writes the answer format


def varied_records():
    """Prompts of different lengths (left padding in the shared prefill), labels of different token lengths and
    counts, and a label that is a prefix of another."""
    rows = [("heavy", "EVQLVESGGGLVQPGGSLRLSCAAS", ["heavy", "kappa", "lambda"]),
            ("kappa", "DIQMTQSPS", ["heavy", "kappa", "lambda"]),
            ("T cell", "EIVLTQSPGTLSLSPGERATLSCRASQSVSSSYLA", ["T cell", "T", "B cell", "monocyte"]),
            ("lambda", "QSALTQPASVSGSPGQSITISC", ["heavy", "kappa", "lambda"])]
    return [{"id": f"v{i}", "question": f"<protein>\nWhich one{'?' * (i + 1)} Answer with one of: {', '.join(ls)}.",
             "answer": a, "label_set": ls, "protein": [s], "dna": [], "rna": [], "reasoning": ""}
            for i, (a, s, ls) in enumerate(rows)]


def single_scores(model, processor, record):
    """The one-record-at-a-time reference: full-vocabulary log-softmax over every position of every label row."""
    import torch

    from bioreason.data.chat import modality_inputs
    from bioreason.evaluation.scoring import EMPTY_THINK, prompt_text

    labels = record["label_set"]
    prefix = prompt_text(processor, record) + EMPTY_THINK
    items = {m: v * len(labels) for m, v in modality_inputs(record).items()}
    batch = processor(text=[prefix + label + "</answer>" for label in labels], padding_side="right", **items)
    with torch.no_grad():
        logps = torch.log_softmax(model(**batch).logits[:, :-1].float(), -1)
    token = logps.gather(-1, batch["input_ids"][:, 1:, None])[..., 0] * batch["attention_mask"][:, 1:]
    return token.sum(-1)  # the whole row: differences between labels are what the argmax sees


@pytest.mark.parametrize("projector", ["resampler", "linear"])
def test_batched_likelihood_equals_one_record_at_a_time(projector):
    import torch

    from bioreason.evaluation.scoring import likelihood_scores, predict_likelihood

    torch.manual_seed(0)
    model, processor = tiny_model("esm2", projector=projector)
    model.eval()
    recs = varied_records()
    batched = likelihood_scores(model, processor, recs, normalization="sum")
    for record, scores in zip(recs, batched, strict=True):
        reference = single_scores(model, processor, record)
        got = torch.tensor(scores)
        # fp32 sums of ~60 nats from a cached, left-padded prefill vs one full pass: equal to ~1e-5 relative
        assert torch.allclose(got - got[0], reference - reference[0], atol=1e-3), record["id"]
        assert record["label_set"][int(got.argmax())] == predict_likelihood(model, processor, record,
                                                                            normalization="sum")
    for normalization in ("sum", "mean"):
        metrics = evaluate_records(model, processor, recs, batch_size=3, normalization=normalization)
        assert [p["prediction"] for p in metrics["predictions"]] == [
            predict_likelihood(model, processor, r, normalization=normalization) for r in recs]


def test_mean_normalised_scores_are_the_sums_over_each_labels_own_token_count():
    import torch

    from bioreason.evaluation.scoring import likelihood_scores

    model, processor = tiny_model("esm2")
    model.eval()
    recs = varied_records()
    sums = likelihood_scores(model, processor, recs, normalization="sum")
    means = likelihood_scores(model, processor, recs, normalization="mean")
    for record, s, m in zip(recs, sums, means, strict=True):
        ratio = torch.tensor(s) / torch.tensor(m)  # the number of scored tokens per label row
        assert torch.allclose(ratio, ratio.round(), atol=1e-3) and (ratio.round() >= 1).all()
        if "T cell" in record["label_set"]:  # "T cell" and "T" differ in length: their token counts differ
            counts = dict(zip(record["label_set"], ratio.round().tolist(), strict=True))
            assert counts["T cell"] > counts["T"]


def test_length_normalisation_picks_a_long_right_label_over_a_short_wrong_one():
    """A model that gives each of the 6 tokens of the long right label probability 0.5 and the one token of the short
    wrong label 0.2: summed, the long label loses (6 log 0.5 < log 0.2); per token, it wins. `combine_label_scores` is
    the rule both scorers apply to a row's token log-probabilities."""
    import math

    import torch

    from bioreason.evaluation.scoring import combine_label_scores

    logps = torch.tensor([[math.log(0.5)] * 6, [math.log(0.2)] + [0.0] * 5])  # row 0: long right; row 1: short wrong
    mask = torch.tensor([[True] * 6, [True] + [False] * 5])
    assert int(combine_label_scores(logps, mask, "sum").argmax()) == 1
    assert int(combine_label_scores(logps, mask, "mean").argmax()) == 0
    assert combine_label_scores(logps, mask, "mean").tolist() == pytest.approx([math.log(0.5), math.log(0.2)])
    with pytest.raises(ValueError, match="normalization must be one of"):
        combine_label_scores(logps, mask, "max")


def test_batched_likelihood_encodes_each_record_once_and_reports_progress(capsys):
    model, processor = tiny_model("esm2")
    seen = []
    model.model.encoders["protein"].register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    evaluate_records(model, processor, varied_records(), batch_size=8, desc="id_test")
    assert seen == [4]  # one batch, one encoder row per record, not one per (record, label)
    assert "id_test" in capsys.readouterr().err


def test_likelihood_without_label_set_is_an_error():
    model, processor = tiny_model("esm2")
    record = {**records()[0], "label_set": []}
    with pytest.raises(ValueError, match="has no label_set"):
        evaluate_records(model, processor, [record])
