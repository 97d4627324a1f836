"""The baselines every evaluation reports: each proven on a case whose answer is known."""

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import tiny_model

from bioreason.data.balance import balanced_indices
from bioreason.data.records import make_record
from bioreason.evaluation.baselines import (
    correct_of,
    cross_label_donors,
    derangement,
    majority_label,
    majority_scores,
    model_predictor,
    pooled_features,
    probe_scores,
    reliance_scores,
    swap_modality_inputs,
)

QUESTION = "<protein>\nWhich residue dominates? Answer with one of: alanine, tryptophan."
LABELS = ["alanine", "tryptophan"]


def records(n: int, split: str, seed: int) -> list[dict]:
    """Sequences mostly of A (alanine) or W (tryptophan) with random other residues: linearly separable after any
    encoder that embeds residues differently."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = LABELS[i % 2]
        seq = [("A" if label == "alanine" else "W") if rng.random() < 0.7 else rng.choice(list("CDEFGHIKLMNPQ"))
               for _ in range(int(rng.integers(10, 16)))]
        out.append(make_record(f"{split}-{i}", "toy", split, "protein", ["".join(seq)], QUESTION, label, LABELS))
    return out


def test_majority_label_is_the_most_frequent_and_ties_do_not_depend_on_order():
    assert majority_label(["b", "a", "b"]) == "b"
    assert majority_label(["b", "a"]) == majority_label(["a", "b"]) == "a"
    with pytest.raises(ValueError, match="at least one train record"):
        majority_label([])


def test_majority_scores_equal_the_share_of_the_majority_label():
    train = records(6, "train", 0)[:5]  # 3 alanine, 2 tryptophan
    test = records(8, "id_test", 1)  # 4 and 4
    scores = majority_scores(train, {"id": test})
    assert scores["label"] == "alanine"
    assert scores["id"]["accuracy"] == pytest.approx(0.5) and scores["id"]["n"] == 8


def test_probe_separates_separable_features():
    model, processor = tiny_model("esm2")
    train, test = records(40, "train", 0), records(20, "id_test", 1)
    features = pooled_features(model, processor, test)
    assert features.shape == (20, model.model.encoders["protein"].hidden_size)
    scores = probe_scores(model, processor, train, {"id": test})
    assert scores["id"]["accuracy"] == 1.0 and scores["train_records"] == 40


def test_probe_features_are_the_encoders_and_come_through_the_feature_cache():
    model, processor = tiny_model("esm2")
    cache = model.enable_feature_cache()
    test = records(6, "id_test", 1)
    first = pooled_features(model, processor, test)
    misses = cache.misses
    again = pooled_features(model, processor, test)
    assert misses == 6 and cache.misses == misses and cache.hits >= 6  # one encoder pass per unique input
    np.testing.assert_allclose(first, again)
    values = processor.featurize("protein", test[0]["protein"])[0]
    with torch.no_grad():
        emb, mask = model.model.encoders["protein"](values["values"], values["mask"].bool())
    np.testing.assert_allclose(first[0], emb[0][mask[0]].mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_probe_features_of_a_trainable_encoder_do_not_depend_on_dropout_and_the_mode_is_restored():
    model, processor = tiny_model("esm2", encoders_trainable=True)  # the tiny ESM has dropout 0.1
    model.train()
    encoder = model.model.encoders["protein"]
    assert encoder.training  # a trainable encoder follows the model into train mode
    test = records(6, "id_test", 1)
    torch.manual_seed(0)
    first = pooled_features(model, processor, test)
    torch.manual_seed(1)
    again = pooled_features(model, processor, test)
    np.testing.assert_array_equal(first, again)
    assert model.training and encoder.training
    values = processor.featurize("protein", test[0]["protein"])[0]
    with torch.no_grad():
        torch.manual_seed(2)
        noisy, mask = encoder(values["values"], values["mask"].bool())  # what the features were before: dropout on
    assert not np.allclose(first[0], noisy[0][mask[0]].mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_probe_needs_two_labels():
    model, processor = tiny_model("esm2")
    train = [r for r in records(8, "train", 0) if r["answer"] == "alanine"]
    with pytest.raises(ValueError, match="at least two labels"):
        probe_scores(model, processor, train, {"id": records(4, "id_test", 1)})


@pytest.mark.parametrize("n", [2, 3, 7, 32])
def test_derangement_moves_every_record_and_is_seeded(n):
    perm = derangement(n, seed=3)
    assert sorted(perm) == list(range(n)) and all(perm[i] != i for i in range(n))
    assert perm == derangement(n, seed=3)
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


def test_swap_keeps_question_and_answer_and_takes_another_records_inputs():
    recs = records(5, "id_test", 0)
    swapped = swap_modality_inputs(recs, seed=0)
    perm = derangement(5, seed=0)
    for i, r in enumerate(swapped):
        assert r["answer"] == recs[i]["answer"] and r["question"] == recs[i]["question"]
        assert r["protein"] == recs[perm[i]]["protein"]


def reader(records_: list[dict]):
    """A toy model that reads its input perfectly: the label is the dominant residue of the sequence it is given."""
    def predict(recs):
        return ["alanine" if r["protein"][0].count("A") > r["protein"][0].count("W") else "tryptophan" for r in recs]

    return predict


def ignorer(recs):
    """A toy model that never looks at its input: always the same answer."""
    return ["alanine"] * len(recs)


def test_cross_label_reliance_is_the_accuracy_of_a_reader_and_zero_for_an_ignorer():
    recs = records(40, "id_test", 0)
    predict = reader(recs)
    real = correct_of(predict(recs), recs)
    assert real.mean() == 1.0  # the toy reader is right on its own inputs
    scores = reliance_scores(predict, recs, real, seed=0)
    # every cross-label donor has the other dominant residue: each swapped answer turns wrong
    assert scores["accuracy_swapped_cross_label"] == 0.0 and scores["reliance_cross_label"] == pytest.approx(1.0)
    # any-donor swaps keep a same-label donor right about half the time: reliance is well below the accuracy
    assert 0.2 < scores["reliance"] < 0.8
    assert scores["reliance"] == pytest.approx(1.0 - scores["accuracy_swapped"])
    assert scores["reliance_lo"] <= scores["reliance"] <= scores["reliance_hi"]
    ignored = reliance_scores(ignorer, recs, correct_of(ignorer(recs), recs), seed=0)
    assert ignored["reliance"] == 0.0 and ignored["reliance_cross_label"] == 0.0
    assert ignored["reliance_cross_label_lo"] == ignored["reliance_cross_label_hi"] == 0.0


def test_reliance_swaps_inputs_and_a_no_swap_would_be_caught():
    """What the swapped pass sees: each record's question and answer with another record's input; a cross-label
    donor always has another answer."""
    recs = records(12, "id_test", 1)
    seen = []

    def spy(batch):
        seen.append(batch)
        return reader(recs)(batch)

    reliance_scores(spy, recs, [1] * len(recs), seed=3)
    anything, cross = seen
    assert all(s["protein"] != r["protein"] and s["answer"] == r["answer"] for s, r in zip(anything, recs, strict=True))
    donors = cross_label_donors(recs, seed=3)
    assert all(recs[j]["answer"] != r["answer"] for r, j in zip(recs, donors, strict=True))
    assert [s["protein"] for s in cross] == [recs[j]["protein"] for j in donors]


def test_cross_label_reliance_is_none_where_a_split_has_one_label():
    recs = [r for r in records(10, "ood_test", 0) if r["answer"] == "alanine"]
    scores = reliance_scores(reader(recs), recs, [1] * len(recs))
    assert scores["reliance_cross_label"] is None and "reliance" in scores


def test_a_model_whose_features_are_zeroed_relies_on_nothing():
    from bioreason.evaluation.scoring import correct_vector, evaluate_records

    model, processor = tiny_model("esm2")
    with torch.no_grad():
        for param in model.model.projectors["protein"].out.parameters():
            param.zero_()
    recs = records(8, "id_test", 0)
    real = correct_vector(evaluate_records(model, processor, recs, progress=False)["predictions"])
    scores = reliance_scores(model_predictor(model, processor), recs, real)
    assert scores["reliance"] == 0.0 and scores["reliance_cross_label"] == 0.0


def test_balanced_indices_draw_labels_in_equal_shares_and_repeat_a_rare_label_only_when_used_up():
    labels = ["heavy"] * 10 + ["kappa"] * 4 + ["lambda"] * 2
    picked = balanced_indices(labels, 12, seed=0)
    counts = Counter(labels[i] for i in picked)
    assert counts == {"heavy": 4, "kappa": 4, "lambda": 4}
    heavy = [i for i in picked if labels[i] == "heavy"]
    kappa = [i for i in picked if labels[i] == "kappa"]
    assert len(set(heavy)) == 4 and sorted(set(kappa)) == [10, 11, 12, 13]  # no repeat before every kappa is used
    assert picked == balanced_indices(labels, 12, seed=0) and picked != balanced_indices(labels, 12, seed=1)
    assert Counter(labels[i] for i in balanced_indices(labels, 13, seed=0))["heavy"] == 5


def test_train_records_balance_a_closed_label_set_unless_switched_off():
    from datasets import Dataset, DatasetDict

    from bioreason.training.arguments import DataArguments
    from bioreason.training.task import train_records

    rows = records(3, "train", 0) + [r for r in records(12, "train", 1) if r["answer"] == "alanine"]
    dataset = DatasetDict({"train": Dataset.from_list(rows)})
    balanced = train_records(dataset, DataArguments(max_train_examples=6))
    assert Counter(balanced["answer"]) == {"alanine": 3, "tryptophan": 3}
    natural = train_records(dataset, DataArguments(max_train_examples=len(rows), balance_labels=False))
    assert Counter(natural["answer"]) == Counter(r["answer"] for r in rows)
