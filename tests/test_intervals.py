"""Intervals and paired comparisons against values worked by hand or taken from textbooks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bioreason.evaluation.intervals import (
    format_difference,
    macro_f1_interval,
    mcnemar_exact,
    mean_interval,
    paired_comparison,
    wilson_interval,
)
from bioreason.evaluation.scoring import classification_metrics


@pytest.mark.parametrize("k, n, lo, hi", [
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Statistics in Medicine 17:857, method 3 (no continuity correction)
    (15, 148, 0.0624, 0.1605),  # idem
    (0, 20, 0.0, 0.1611),  # idem: the interval at 0 stays inside [0, 1]
    (1, 29, 0.0061, 0.1718),  # idem
])
def test_wilson_interval_matches_textbook_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_is_symmetric_and_bounded():
    lo, hi = wilson_interval(10, 20)
    assert lo + hi == pytest.approx(1.0)
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] < 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_exact_on_a_hand_worked_table():
    # 2 x 2 table of A right / B right: discordant A-only = 2, B-only = 9, so n = 11 discordant records.
    # P(X <= 2 | Binomial(11, 1/2)) = (1 + 11 + 55) / 2048 = 67 / 2048; two-sided: 134 / 2048.
    assert mcnemar_exact(2, 9) == pytest.approx(134 / 2048)
    assert mcnemar_exact(9, 2) == pytest.approx(134 / 2048)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0  # capped
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_paired_comparison_counts_discordant_records_and_brackets_the_difference():
    a = [1, 1, 0, 0, 1, 0, 1, 0, 0, 0] * 10
    b = [1, 1, 1, 1, 1, 0, 0, 1, 0, 0] * 10
    out = paired_comparison(a, b, seed=0)
    assert out["n"] == 100 and out["seeds"] == 1
    assert (out["a_only"], out["b_only"]) == (10, 30)
    assert out["difference"] == pytest.approx(0.2)
    assert out["difference_lo"] < 0.2 < out["difference_hi"] and out["difference_lo"] > 0
    assert out["p_value"] == pytest.approx(mcnemar_exact(10, 30))
    assert format_difference(out).startswith("+0.200 [")


def test_paired_comparison_over_seeds_averages_each_record_and_refuses_unpaired_inputs():
    a = np.array([[1, 0, 0, 1], [1, 0, 1, 1], [0, 0, 0, 1]])
    b = np.array([[1, 1, 0, 1], [1, 1, 1, 1], [1, 1, 0, 1]])
    out = paired_comparison(a, b)
    assert out["seeds"] == 3 and out["n"] == 4
    assert out["difference"] == pytest.approx((b - a).mean())
    assert (out["a_only"], out["b_only"]) == (0, 4)
    with pytest.raises(ValueError, match="same records"):
        paired_comparison([1, 0, 1], [1, 0])


def test_bootstrap_intervals_are_seeded_and_shrink_with_more_records():
    rng = np.random.default_rng(0)
    small, large = rng.integers(0, 2, 50), rng.integers(0, 2, 2000)
    assert mean_interval(small, seed=1) == mean_interval(small, seed=1)
    width = lambda iv: iv[1] - iv[0]  # noqa: E731
    assert width(mean_interval(large)) < width(mean_interval(small)) / 3


def test_macro_f1_interval_contains_the_point_value_and_metrics_carry_every_interval():
    golds = ["a", "b", "c"] * 30
    preds = ["a", "b", "b"] * 30
    m = classification_metrics(preds, golds, ["a", "b", "c"])
    assert m["macro_f1_lo"] <= m["macro_f1"] <= m["macro_f1_hi"]
    assert (m["accuracy_lo"], m["accuracy_hi"]) == pytest.approx(wilson_interval(60, 90))
    assert m["prediction_rate"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    lo, hi = macro_f1_interval(np.array([0, 1, 2] * 5), np.array([0, 1, 2] * 5), 3)
    assert lo == hi == 1.0


def test_prediction_rates_count_unparsed_answers_apart():
    m = classification_metrics(["a", None, "a", "b"], ["a", "b", "a", "b"], ["a", "b"])
    assert m["prediction_rate"] == pytest.approx({"a": 0.5, "b": 0.25, "(none)": 0.25})
    assert math.isclose(sum(m["prediction_rate"].values()), 1.0)
