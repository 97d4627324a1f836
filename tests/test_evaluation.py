"""Evaluation: metrics against hand-computed values; both scorers run on a tiny model."""

from __future__ import annotations

import pytest
from conftest import tiny_model

from bioreason.evaluation import classification_metrics, evaluate_records


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
    assert m["n"] == 3 and 0.0 <= m["accuracy"] <= 1.0
    assert len(m["predictions"]) == 3
    if mode == "likelihood":
        assert all(p["prediction"] in {"heavy", "kappa"} for p in m["predictions"])
    else:
        assert m["format_rate"] == 0.0  # an untrained tiny model never writes the answer format
