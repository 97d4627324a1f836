"""The benchmark helpers (bench/): results judge their goal in the right direction, the timer takes the median, the
packing counts read tokens rather than a mask, GRPO arms that sampled different completions are refused, and the
report names the machine of every figure."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_model

from bench import run as bench_run
from bench.common import Result, alternating, timed
from bench.p3_grpo import paired_rollouts
from bench.p4_packing import padded_share, token_counts
from bench.p7_eval import agreeing
from bioreason.training.collator import RecordCollator


def test_result_meets_a_floor_or_a_ceiling():
    assert Result("speedup", 2.1, 2.0, "x", "").met and not Result("speedup", 1.9, 2.0, "x", "").met
    assert Result("seconds", 100, 600, "s", "", lower_is_better=True).met
    assert not Result("seconds", 700, 600, "s", "", lower_is_better=True).met
    assert Result("r", 1.23456, 1.0, "x", "").as_dict()["value"] == 1.235


def test_timed_runs_warmup_then_repeats_and_returns_the_median(monkeypatch):
    calls, clock = [], iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0])  # three timed calls: 1 s, 3 s, 2 s
    monkeypatch.setattr("bench.common.time.perf_counter", lambda: next(clock))
    assert timed(lambda: calls.append(1), repeats=3, warmup=2) == 2.0
    assert len(calls) == 5


RECORDS = [
    {"id": str(i), "question": "<protein>\nWhich chain? Answer with one of: heavy, kappa.", "answer": answer,
     "reasoning": reasoning, "label_set": ["heavy", "kappa"], "protein": [seq], "dna": [], "rna": []}
    for i, (answer, reasoning, seq) in enumerate([
        ("heavy", "Starts with EVQL, as heavy chains do; the CDR3 is long.", "EVQLVESGGGLVQPGG"),
        ("kappa", "DIQM.", "DIQMTQSP"),
        ("heavy", "QVQL.", "QVQLQESGPGLVKPSETLSLTCTVS"),
    ])
]


def test_packing_counts_come_from_the_tokens_not_a_default_mask():
    _, processor = tiny_model("esm2", projector="linear")
    lengths = [RecordCollator(processor)([r])["input_ids"].numel() for r in RECORDS]
    assert len(set(lengths)) > 1  # the examples differ in length, so padding them costs positions
    real, total = token_counts(RecordCollator(processor), RECORDS, batch_size=3)
    assert real == sum(lengths) and total == 3 * max(lengths) and real < total
    real_packed, total_packed = token_counts(RecordCollator(processor, packing=True), RECORDS, batch_size=3)
    assert real_packed == real and total_packed == sum(lengths)  # a packed row holds the examples and nothing else
    # batches of 2: the last batch holds one example, so it pads nothing
    _, total_pairs = token_counts(RecordCollator(processor), RECORDS, batch_size=2)
    assert total_pairs == 2 * max(lengths[:2]) + lengths[2]
    # the figure p4 reports: the padded arm's positions that hold no example token
    assert padded_share(real, total) == pytest.approx(1 - sum(lengths) / (3 * max(lengths)))
    assert padded_share(real, total) > 0 and padded_share(real_packed, total_packed) == 0
    with pytest.raises(ValueError, match="at most"):
        padded_share(total + 1, total)


def test_ratio_benchmarks_alternate_which_arm_runs_first():
    assert alternating(("a", "b")) == ["a", "b", "b", "a"]
    assert alternating(("a", "b"), rounds=3) == ["a", "b", "b", "a", "a", "b"]
    order = alternating(("plain", "ours"), rounds=4)
    firsts = [order[i] for i in range(0, len(order), 2)]
    assert firsts.count("plain") == firsts.count("ours") == 2
    with pytest.raises(ValueError):
        alternating(("a", "b"), rounds=0)


def test_eval_arms_that_predict_differently_are_refused():
    agreeing(["heavy", "kappa"], ["heavy", "kappa"])
    with pytest.raises(RuntimeError, match="disagree on 1 of 2 records"):
        agreeing(["heavy", "kappa"], ["heavy", "lambda"])
    with pytest.raises(RuntimeError, match="different records"):
        agreeing(["heavy"], ["heavy", "kappa"])


def test_a_rerun_benchmark_replaces_all_its_figures(tmp_path, monkeypatch):
    """A benchmark that stops reporting a figure (p4 no longer reports its packed efficiency) must not leave the
    old one in results.json, where the README table would still be checked against it."""
    import bench.p4_packing

    old = {"results": {"p4_packing_efficiency": Result("p4_packing_efficiency", 1.0, 0.95, "", "").as_dict(),
                       "p1_cache_speedup": Result("p1_cache_speedup", 1.5, 3.0, "x", "").as_dict()},
           "seconds": {}, "machine": MACHINE}
    (tmp_path / "results.json").write_text(json.dumps(old))
    monkeypatch.setattr(bench_run, "RESULTS", str(tmp_path / "results.json"))
    monkeypatch.setattr(bench_run, "machine", lambda: MACHINE)
    monkeypatch.setattr(bench.p4_packing, "run", lambda: [Result("p4_packing_speedup", 1.2, 1.5, "x", "")])
    results = bench_run.run_all(("p4",))["results"]
    assert set(results) == {"p1_cache_speedup", "p4_packing_speedup"}
    assert results["p1_cache_speedup"]["machine"] == MACHINE  # kept, with the machine it was measured on


def test_grpo_arms_must_have_sampled_the_same_completions():
    paired_rollouts({"completions": ["a", "b"]}, {"completions": ["a", "b"]})
    with pytest.raises(RuntimeError, match="1 of 2 completions differ"):
        paired_rollouts({"completions": ["a", "b"]}, {"completions": ["a", "c"]})
    with pytest.raises(RuntimeError, match="not paired"):
        paired_rollouts({"completions": ["a", "b"]}, {"completions": ["a"]})


MACHINE = {"cpu": "Test CPU", "cores": 2, "torch_threads": 2, "amx_bf16": False, "avx512_bf16": True,
           "cpu_capability": "AVX512", "native_bf16": True, "precision": "bf16 autocast", "cuda": None,
           "torch": "2.13.0", "python": "3.11"}


def test_report_names_the_machine_and_goal_direction_of_every_figure(tmp_path, monkeypatch):
    older = {**MACHINE, "cpu": "Older CPU"}
    results = {
        "p6_quickstart_s": {**Result("p6_quickstart_s", 219, 600, "s", "quickstart", lower_is_better=True).as_dict(),
                            "measured": "then", "machine": older},
        "p1_cache_speedup": {**Result("p1_cache_speedup", 1.5, 3.0, "x", "cache", {"epochs": [1, 2]}).as_dict(),
                             "measured": "now", "machine": MACHINE},
    }
    monkeypatch.setattr(bench_run, "RESULTS", str(tmp_path / "results.json"))
    monkeypatch.setattr(bench_run, "REPORT", str(tmp_path / "BENCHMARKS.md"))
    monkeypatch.setattr(bench_run, "NOTES", str(tmp_path / "absent.md"))
    bench_run.write(bench_run.summary(("p1",), MACHINE, {"p1": 12.0}, results))
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| `p6_quickstart_s` | 219 s | <= 600 | yes | Older CPU" in text
    assert "| `p1_cache_speedup` | 1.5 x | >= 3.0 | no | Test CPU" in text
    assert "Test CPU, 2 cores" in text and "p1 12.0" in text and '"epochs"' in text
    assert json.loads((tmp_path / "results.json").read_text())["results"] == results


def test_the_sft_timing_helper_runs_the_sft_recipe_on_a_copy(tmp_path, monkeypatch):
    """p1, p4, p5 and p8 time the SFT recipe through this helper: it must run the recipe as it is today (a signature
    change there broke the bench once, with nothing to catch it), time every step and leave the caller's model alone."""
    import torch

    from bench.sft_timing import sft

    monkeypatch.chdir(tmp_path)  # the bench builds its benchmarks under ./runs/data, as the recipes do
    model, processor = tiny_model("antiberty", projector="mean")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = sft(model, processor, "antibody_chain", examples=4, epochs=2, batch_size=2, out=str(tmp_path / "out"))
    assert len(out["steps"]) == 4 and len(out["epochs"]) == 2 and len(out["losses"]) == 4
    assert out["cache"]["hits"] > 0  # epoch 2 reads epoch 1's features
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
