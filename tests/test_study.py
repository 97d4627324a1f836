"""Studies: grid expansion, resume of a half-finished study, harvest, report; the eval CLI, checkpoint curves and
the multi-label metrics with ontology propagation (checked by hand)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_model

from bioreason.data.benchmarks import build_benchmark
from bioreason.evaluation import study
from bioreason.evaluation.scoring import multilabel_metrics, parse_obo, propagate
from bioreason.evaluation.study_report import pareto_front, write_study_report


def write_study(path, grid, base=None):
    path.write_text(yaml.safe_dump({"base": base or {}, "grid": grid}))
    return str(path)


def test_grid_expansion_and_stage_rules(tmp_path):
    config = write_study(tmp_path / "s.yaml", {"sft_examples": [0, 32], "rl_start": ["warm", "cold"],
                                               "cpt": [False, True], "seed": [0, 1]},
                         base={"stages": ["sft", "grpo"], "rl_examples": 8})
    runs = study.plan(config)
    # sft_examples=0 and rl_start=cold give the same effective config: the duplicate is kept once
    assert len(runs) == 12
    assert len({r.name for r in runs}) == len(runs)
    by_axes = {tuple(sorted(r.axes.items())): r for r in runs}
    warm = by_axes[(("cpt", True), ("rl_start", "warm"), ("seed", 0), ("sft_examples", 32))]
    assert warm.config["stages"] == ["cpt", "sft", "grpo"] and warm.config["seed"] == 0
    cold = by_axes[(("cpt", False), ("rl_start", "cold"), ("seed", 1), ("sft_examples", 32))]
    assert cold.config["stages"] == ["grpo"]
    with pytest.raises(ValueError, match="grid axis 'seed' must be a non-empty list"):
        study.load_study(write_study(tmp_path / "bad.yaml", {"seed": []}))


def test_list_valued_axes_name_their_folders_without_brackets_quotes_or_slashes(tmp_path):
    config = write_study(tmp_path / "s.yaml", {"encoders": [["rna=expression:runs/data/p/cells.h5ad"],
                                                            ["rna=scanpy_pca:runs/data/p", "dna=kmer"]]})
    names = [r.name for r in study.plan(config)]
    assert names == ["encoders-rna=expression_runs_data_p_cells.h5ad", "encoders-rna=scanpy_pca_runs_data_p+dna=kmer"]
    with pytest.raises(ValueError, match="would share the folder 'encoders-a_b'"):
        study.plan(write_study(tmp_path / "clash.yaml", {"encoders": [["a/b"], ["a:b"]]}))


def test_backbone_axis_sets_the_llm(tmp_path):
    runs = study.plan(write_study(tmp_path / "s.yaml", {"backbone": ["Qwen/Qwen3-0.6B", "default"]}))
    assert [r.config["llm"] for r in runs] == ["Qwen/Qwen3-0.6B", "default"]


def fake_run(out, name, axes, sft_ood, grpo_ood, sft_examples=32, rl_examples=8, ranks=(16, 4), majority_id=0.5,
             curve=(), correct=None, validation=None, validation_only=False):
    run_dir = os.path.join(out, "runs", name)
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "run_config.json"), "w") as fh:
        json.dump({"pipeline": {"sft": {"per_device_train_batch_size": 4},
                                "grpo": {"per_device_train_batch_size": 8, "num_generations": 4},
                                "cpt": {"per_device_train_batch_size": 8}}}, fh)
    stages = [{"name": "sft", "id": {"accuracy": 0.8, "macro_f1": 0.7}, "ood": {"accuracy": sft_ood, "macro_f1": 0.5},
               "steps": 4, "seconds": 10.0},
              {"name": "grpo", "id": {"accuracy": 0.7, "macro_f1": 0.6}, "ood": {"accuracy": grpo_ood,
                                                                                 "macro_f1": 0.6},
               "steps": 4, "seconds": 20.0}]
    for stage, vectors in zip(stages, correct or (), strict=False):  # per-record correctness: {split: [0/1 ...]}
        stage["correct"] = vectors
    for stage, acc in zip(stages, validation or (), strict=False):
        stage["validation"] = {"accuracy": acc, "accuracy_lo": acc - 0.1, "accuracy_hi": acc + 0.05}
    budget = {"sft_examples": sft_examples, "sft_epochs": 1, "rl_examples": rl_examples, "sft_lora_r": ranks[0],
              "grpo_lora_r": ranks[1]}
    baselines = {"majority": {"label": "x", "id": {"accuracy": majority_id}, "ood": {"accuracy": 0.5}},
                 "probe": {"id": {"accuracy": 0.95}, "ood": {"accuracy": 0.9}}}
    if validation_only:  # `score_test_splits: false`: the test splits unread, the baselines on validation
        for stage in stages:
            stage["id"], stage["ood"] = {}, {}
        baselines = {"majority": {"label": "x", "validation": {"accuracy": majority_id}},
                     "probe": {"validation": {"accuracy": 0.95}}}
    with open(os.path.join(run_dir, "metrics.json"), "w") as fh:
        json.dump({"stages": stages, "budget": budget, "curve": [
                      {"stage": "sft", "step": step, "id": {"accuracy": acc, "reliance": 0.1}, "ood": {"accuracy": acc}}
                      for step, acc in curve], "baselines": baselines}, fh)
    with open(os.path.join(run_dir, "axes.json"), "w") as fh:
        json.dump(axes, fh)
    open(os.path.join(run_dir, "DONE"), "w").close()


def test_harvest_and_report(tmp_path, monkeypatch):
    import bioreason.evaluation.study_report as study_report

    out = str(tmp_path)
    fake_run(out, "a", {"seed": 0}, 0.5, 0.6, sft_examples=32, ranks=(16, 4), majority_id=0.8,  # SFT at majority
             curve=[(2, 0.2), (4, 0.4)])
    fake_run(out, "b", {"seed": 1}, 0.4, 0.7, sft_examples=64, ranks=(16, 16), curve=[(2, 0.6)])
    fake_run(out, "c", {"seed": 0}, 0.6, 0.5, sft_examples=32, ranks=(64, 4))
    fake_run(out, "d", {"seed": 1}, 0.5, 0.5, sft_examples=64, ranks=(64, 16))
    os.makedirs(os.path.join(out, "runs", "unfinished"))  # no DONE: not harvested
    table = study.harvest(out)
    assert list(table["run"]) == ["a", "b", "c", "d"]
    row = table.set_index("run").loc["b"]
    assert row["sft_ood_accuracy"] == 0.4 and row["grpo_ood_accuracy"] == 0.7 and row["ood_accuracy"] == 0.7
    assert row["axis_seed"] == 1 and row["stages"] == "sft+grpo" and row["train_seconds"] == 30.0
    assert os.path.exists(os.path.join(out, "results.parquet")) and os.path.exists(os.path.join(out, "results.csv"))
    curve = pd.read_csv(os.path.join(out, "curve.csv"))
    assert list(curve["run"]) == ["a", "a", "b"] and list(curve["examples"]) == [8, 16, 8]  # steps x batch size 4
    assert list(curve["ood_accuracy"]) == [0.2, 0.4, 0.6] and curve["id_reliance"].eq(0.1).all()
    drawn = []  # every line plot draws both baselines, from the runs' own figures
    draw = study_report.draw_baselines
    monkeypatch.setattr(study_report, "draw_baselines", lambda ax, b, *a, **k: drawn.append(b) or draw(ax, b, *a, **k))
    report = open(write_study_report(out)).read()
    for png in ("id_vs_ood.png", "ood_vs_sft_budget.png", "accuracy_during_sft.png", "budget_split.png",
                "rank_heatmap.png"):
        assert os.path.exists(os.path.join(out, png)) and png in report
    assert len(drawn) == 3 and all(b["probe"]["ood"]["accuracy"] == 0.9 and "majority" in b for b in drawn)
    assert "changed OOD accuracy by +0.075" in report  # (0.1 + 0.3 - 0.1 + 0.0) / 4
    assert row["probe_id_accuracy"] == 0.95 and row["majority_ood_accuracy"] == 0.5
    assert "1 of 4 runs end SFT at or below the majority class" in report
    assert "majority ID 0.575 / OOD 0.500; probe ID 0.950 / OOD 0.900" in report  # (0.8 + 3 x 0.5) / 4


def test_a_study_of_validation_only_runs_reports_on_validation(tmp_path):
    """Runs that choose a config (`score_test_splits: false`) have no ID / OOD: the report ranks and plots
    validation, counts the majority-class runs there, and says why it draws no ID vs OOD plot."""
    out = str(tmp_path)
    fake_run(out, "short", {"sft_examples": 32}, None, None, sft_examples=32, majority_id=0.7, validation=[0.6, 0.65],
             validation_only=True)
    fake_run(out, "long", {"sft_examples": 64}, None, None, sft_examples=64, majority_id=0.7, validation=[0.8, 0.85],
             validation_only=True)
    table = study.harvest(out).set_index("run")
    assert "id_accuracy" not in table and table.loc["long", "validation_accuracy"] == 0.85
    assert table.loc["short", "majority_validation_accuracy"] == 0.7
    report = open(write_study_report(out)).read()
    ranked = report.split("Top runs by final validation accuracy")[1]
    assert ranked.index("| long |") < ranked.index("| short |")
    assert "Scored on validation only" in report and "id_vs_ood.png" not in report
    assert not os.path.exists(os.path.join(out, "id_vs_ood.png"))
    assert "ood_vs_sft_budget.png" in report and "budget_split.png" in report
    assert "1 of 2 runs end SFT at or below the majority class (validation)" in report
    assert "Baselines (mean over runs): majority validation 0.700; probe validation 0.950." in report


def test_the_study_ranks_on_validation_and_states_rl_as_a_paired_difference(tmp_path):
    out = str(tmp_path)
    # two runs, 4 OOD records each: run a: SFT 1100 -> GRPO 1110; run b: SFT 0100 -> GRPO 1101
    fake_run(out, "a", {"seed": 0}, 0.5, 0.75, correct=[{"ood": [1, 1, 0, 0]}, {"ood": [1, 1, 1, 0]}],
             validation=[0.6, 0.9])
    fake_run(out, "b", {"seed": 1}, 0.25, 0.75, correct=[{"ood": [0, 1, 0, 0]}, {"ood": [1, 1, 0, 1]}],
             validation=[0.6, 0.7])
    fake_run(out, "c", {"seed": 2}, 0.9, 0.9, validation=[0.5, 0.5])  # best on OOD, worst on validation
    table = study.harvest(out).set_index("run")
    assert table.loc["a", "validation_accuracy"] == 0.9 and table.loc["a", "validation_accuracy_lo"] == 0.8
    assert table.loc["a", "sft_validation_accuracy"] == 0.6
    report = open(write_study_report(out)).read()
    ranked = report.split("Top runs by final validation accuracy")[1]
    assert ranked.index("| a |") < ranked.index("| b |") < ranked.index("| c |")
    # pooled over the runs' 8 records: GRPO right where SFT was wrong 3 times, the reverse 0 times
    pairs = study_report_pairs(out)
    assert pairs["ood"]["difference"] == 3 / 8 and (pairs["ood"]["a_only"], pairs["ood"]["b_only"]) == (0, 3)
    assert "RL after SFT, paired on the same records" in report and "ood +0.375 [" in report
    assert f"p={2 / 8:.2g}" in report  # McNemar: 2 x (1/2)^3


def test_seeds_scored_on_the_same_records_pair_as_seeds_not_as_more_records(tmp_path):
    out = str(tmp_path)
    fake_run(out, "a", {"seed": 0}, 0.5, 0.75, correct=[{"ood": [1, 1, 0, 0]}, {"ood": [1, 1, 1, 0]}])
    fake_run(out, "b", {"seed": 1}, 0.25, 0.75, correct=[{"ood": [0, 1, 0, 0]}, {"ood": [1, 1, 0, 1]}])
    pooled = study_report_pairs(out)["ood"]
    assert (pooled["n"], pooled["seeds"], pooled["stacked_as_seeds"]) == (8, 1, False)  # no configs: runs unknown
    for name in ("a", "b"):
        with open(os.path.join(out, "runs", name, "config.yaml"), "w") as fh:
            fh.write("dataset: benchmark:x\ndata_root: runs/data\nmax_eval_examples: null\nseed: 0\n")
    stacked = study_report_pairs(out)["ood"]
    assert (stacked["n"], stacked["seeds"], stacked["stacked_as_seeds"]) == (4, 2, True)
    # the same difference and McNemar counts; per-record differences averaged over seeds: 0.5, 0, 0.5, 0.5
    assert stacked["difference"] == pooled["difference"] == 3 / 8
    assert (stacked["a_only"], stacked["b_only"], stacked["p_value"]) == (0, 3, pooled["p_value"])
    with open(os.path.join(out, "runs", "b", "config.yaml"), "a") as fh:
        fh.write("task_seed: 1\n")  # another split of the data: other records, so concatenated again
    assert study_report_pairs(out)["ood"]["n"] == 8


def test_stage_pairs_where_keeps_one_cell_of_the_grid(tmp_path):
    from bioreason.evaluation.study_report import stage_pairs

    out = str(tmp_path)
    fake_run(out, "a", {"rl_fraction": 0.5}, 0.5, 0.75, correct=[{"ood": [0, 0]}, {"ood": [1, 1]}])
    fake_run(out, "b", {"rl_fraction": 0.75}, 0.5, 0.75, correct=[{"ood": [1, 1]}, {"ood": [0, 0]}])
    assert stage_pairs(out, "sft", "grpo")["ood"]["difference"] == 0  # the two cells cancel
    assert stage_pairs(out, "sft", "grpo", where={"rl_fraction": 0.5})["ood"]["difference"] == 1
    assert stage_pairs(out, "sft", "grpo", where={"rl_fraction": 0.75})["ood"]["difference"] == -1


def test_runs_of_two_grid_cells_pooled_on_the_same_records_are_called_runs_not_seeds(tmp_path):
    from bioreason.evaluation.intervals import format_difference
    from bioreason.evaluation.study_report import stage_pairs

    out = str(tmp_path)
    fake_run(out, "a", {"rl_fraction": 0.5, "seed": 0}, 0.5, 0.75, correct=[{"ood": [0, 1]}, {"ood": [1, 1]}])
    fake_run(out, "b", {"rl_fraction": 0.75, "seed": 0}, 0.5, 0.75, correct=[{"ood": [0, 1]}, {"ood": [1, 0]}])
    for name in ("a", "b"):
        with open(os.path.join(out, "runs", name, "config.yaml"), "w") as fh:
            fh.write("dataset: benchmark:x\ndata_root: runs/data\nmax_eval_examples: null\nseed: 0\n")
    pooled = stage_pairs(out, "sft", "grpo")["ood"]
    assert (pooled["seeds"], pooled["stacked_as_seeds"], pooled["stacked"]) == (2, True, "runs")
    assert format_difference(pooled).endswith("(n=2 x 2 runs)")
    one_cell = stage_pairs(out, "sft", "grpo", where={"rl_fraction": 0.5})["ood"]
    assert "stacked" not in one_cell and format_difference(one_cell).endswith("(n=2)")


def study_report_pairs(out):
    from bioreason.evaluation.study_report import stage_pairs

    return stage_pairs(out, "sft", "grpo")


def test_pareto_front_by_hand():
    points = np.array([[0.9, 0.1], [0.5, 0.5], [0.4, 0.4], [0.1, 0.9], [0.5, 0.2]])
    assert list(pareto_front(points)) == [3, 1, 0]


def test_multilabel_metrics_with_ontology_by_hand(tmp_path):
    obo = tmp_path / "go.obo"
    obo.write_text("[Term]\nid: GO:3\nis_a: GO:2 ! parent\n\n[Term]\nid: GO:2\nrelationship: part_of GO:1\n\n"
                   "[Term]\nid: GO:1\n\n[Term]\nid: GO:9\n")
    parents = parse_obo(str(obo))
    assert parents == {"GO:3": {"GO:2"}, "GO:2": {"GO:1"}, "GO:1": set(), "GO:9": set()}
    assert propagate({"GO:3"}, parents) == {"GO:1", "GO:2", "GO:3"}
    # predicted the parent GO:2 for gold GO:3: without the ontology no overlap, with it {GO:1, GO:2} match
    plain = multilabel_metrics([{"GO:2"}], [{"GO:3"}])
    assert plain["multilabel_micro_f1"] == 0.0
    onto = multilabel_metrics([{"GO:2"}], [{"GO:3"}], parents)
    assert onto["multilabel_micro_f1"] == pytest.approx(2 * 2 / (2 + 3))


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    model, processor = tiny_model("antiberty", projector="mean")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    build_benchmark("antibody_chain", str(root / "data"))
    base = {"model_name_or_path": str(root / "model"), "dataset": str(root / "data"), "stages": ["sft", "grpo"],
            "max_eval_examples": 3, "evaluate_base": False, "save_model": False, "bf16": False, "rl_examples": 2,
            "sft": {"per_device_train_batch_size": 4},
            "grpo": {"num_generations": 2, "per_device_train_batch_size": 4, "max_completion_length": 4}}
    return root, base


def test_a_killed_study_resumes_where_it_stopped(tiny_setup, tmp_path):
    root, base = tiny_setup
    out = str(tmp_path / "study")
    first = study.run_study(write_study(tmp_path / "a.yaml", {"sft_examples": [4], "seed": [0, 1]}, base), out)
    assert first == {"runs": 2, "ran": 2, "failed": [], "harvested": 2}
    # a run killed mid-way: its folder exists but it has no DONE marker
    killed = os.path.join(out, "runs", sorted(os.listdir(os.path.join(out, "runs")))[0])
    os.remove(os.path.join(killed, "DONE"))
    grown = write_study(tmp_path / "b.yaml", {"sft_examples": [4], "seed": [0, 1, 2]}, base)
    second = study.run_study(grown, out)
    assert second == {"runs": 3, "ran": 2, "failed": [], "harvested": 3}  # the killed run and the new seed only
    table = study.harvest(out)
    assert set(table["axis_seed"]) == {0, 1, 2} and table["ood_accuracy"].between(0, 1).all()


def test_runs_that_differ_only_in_rl_share_one_sft(tiny_setup, tmp_path):
    root, base = tiny_setup
    out = str(tmp_path / "study")
    summary = study.run_study(write_study(tmp_path / "r.yaml", {"grpo.lora_r": [2, 4]}, base), out)
    assert summary == {"runs": 2, "ran": 2, "failed": [], "harvested": 2}
    sft = {}
    for name in sorted(os.listdir(os.path.join(out, "runs"))):
        with open(os.path.join(out, "runs", name, "metrics.json"), encoding="utf-8") as fh:
            sft[name] = json.load(fh)["stages"][0]
    first, second = sft.values()  # the runs ran in this order: the second loaded the first's SFT
    assert "shared_from" not in first and second.pop("shared_from").startswith(os.path.join(out, "stage_cache"))
    assert first == second
    table = study.harvest(out)
    assert table["sft_id_accuracy"].nunique() == 1 and set(table["axis_grpo.lora_r"]) == {2, 4}
    assert not os.path.exists(os.path.join(out, "stage_cache"))  # removed once every run finished
    seconds = dict(zip(table["run"], table["train_seconds"], strict=True))
    shared_run = sorted(sft)[1]
    with open(os.path.join(out, "runs", shared_run, "metrics.json"), encoding="utf-8") as fh:
        grpo_seconds = json.load(fh)["stages"][1]["seconds"]
    assert seconds[shared_run] == pytest.approx(grpo_seconds)  # the shared SFT counts for the run that trained it


def test_local_jobs_run_side_by_side_with_a_share_of_the_cores(tiny_setup, tmp_path):
    root, base = tiny_setup
    out = str(tmp_path / "study")
    summary = study.run_study(write_study(tmp_path / "j.yaml", {"sft_examples": [4], "seed": [0, 1, 2]}, base), out,
                              jobs=2)
    assert summary == {"runs": 3, "ran": 3, "failed": [], "harvested": 3}
    threads = max(1, (os.cpu_count() or 1) // 2)
    for name in os.listdir(os.path.join(out, "runs")):
        with open(os.path.join(out, "runs", name, "run_config.json"), encoding="utf-8") as fh:
            assert json.load(fh)["torch_threads"] == threads
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        study.run_local([], jobs=0)


def test_runs_side_by_side_start_with_the_most_training(tmp_path, monkeypatch):
    """With `jobs` > 1 the runs start in order of planned training work (the pipeline's `planned_work`: SFT examples
    x epochs, RL prompts x samples, CPT examples), ties in grid order, so the longest run does not start last and run
    alone; one job keeps the grid order. `bioreason study run` passes the pipeline's measure."""
    from bioreason.cli import main as cli
    from bioreason.recipes.pipeline import planned_work

    grid = {"sft_examples": [8, 32, 16], "seed": [0, 1]}
    base = {"stages": ["sft", "grpo"], "rl_examples": 4, "grpo": {"num_generations": 2}}
    order = {}

    def record(todo, jobs):
        order[jobs] = [os.path.basename(d) for d in todo]
        return []

    monkeypatch.setattr(study, "run_local", record)
    monkeypatch.setattr(study, "harvest", lambda out: [])
    config = write_study(tmp_path / "s.yaml", grid, base)
    assert cli(["study", "run", config, "--out", str(tmp_path / "two"), "--jobs", "2"]) == 0
    study.run_study(config, str(tmp_path / "one"), jobs=1, work=planned_work)
    assert order[2] == ["seed-0_sft_examples-32", "seed-1_sft_examples-32", "seed-0_sft_examples-16",
                        "seed-1_sft_examples-16", "seed-0_sft_examples-8", "seed-1_sft_examples-8"]
    assert order[1] == [study.run_name(run.axes) for run in study.expand(study.load_study(config))]
    assert order[1][0] == "seed-0_sft_examples-8"
    # RL prompts count once per sample; epochs multiply SFT; CPT counts where it runs
    assert planned_work({"stages": ["sft", "grpo"], "sft_examples": 8, "rl_examples": 4,
                         "grpo": {"num_generations": 4}}) == 8 + 16
    assert planned_work({"stages": ["cpt", "sft"], "sft_examples": 8, "cpt_examples": 3,
                         "sft": {"num_train_epochs": 2}}) == 3 + 16
    assert planned_work({"stages": ["sft"], "total_examples": 10, "rl_fraction": 0.5}) == 5


def test_runs_side_by_side_wait_passively_unless_told_otherwise(monkeypatch):
    """Side-by-side runs get OMP_WAIT_POLICY=PASSIVE (an idle OpenMP thread spinning at its barrier took the other
    run's core: 45 s a step instead of 2.6 s); a policy the user set is kept, and one run alone is left as it is."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    env = study.thread_env(1)
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["OMP_WAIT_POLICY"]) == ("1", "1", "PASSIVE")
    assert "OMP_WAIT_POLICY" not in study.thread_env(None)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert study.thread_env(2)["OMP_WAIT_POLICY"] == "ACTIVE"


def test_submitit_local_executor(tiny_setup, tmp_path):
    pytest.importorskip("submitit")
    root, base = tiny_setup
    out = str(tmp_path / "study")
    summary = study.run_study(write_study(tmp_path / "s.yaml", {"sft_examples": [4], "seed": [0]}, base), out,
                              executor="submitit", cluster="local")
    assert summary["harvested"] == 1 and not summary["failed"]


def test_eval_cli_and_curve(tiny_setup, tmp_path):
    root, _ = tiny_setup
    result_path = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "bioreason.cli", "eval", "--model", str(root / "model"), "--data",
                           str(root / "data"), "--max-examples", "4", "--out", str(result_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(result_path.read_text())
    for split in ("id_test", "ood_test"):
        assert result["splits"][split]["n"] == 4 and len(result["predictions"][split]) == 4
        assert {"accuracy", "accuracy_lo", "accuracy_hi", "macro_f1", "per_class_f1", "reliance", "accuracy_swapped",
                "reliance_cross_label", "prediction_rate"} <= set(result["splits"][split])
        assert result["splits"][split]["reliance"] == pytest.approx(
            result["splits"][split]["accuracy"] - result["splits"][split]["accuracy_swapped"])
        for name in ("majority", "probe"):
            assert result["baselines"][name][split]["n"] == 4
    assert "majority baseline: validation accuracy" in proc.stdout
    assert "probe baseline: validation accuracy" in proc.stdout
    assert "scoring validation 4 of " in proc.stdout  # how many records it scores, said first
    # the encoder ran once per unique input: the two reliance passes per test split reuse the scoring pass's features
    assert result["feature_cache"]["encoded_items"] <= 3 * 4  # at most the 12 scored records' inputs
    assert result["feature_cache"]["hits"] >= 2 * 2 * 4  # both swaps of both test splits read only cached inputs
    assert "id_test (n=4): accuracy" in proc.stdout and "[" in proc.stdout  # the n and the interval are printed
    proc = subprocess.run([sys.executable, "-m", "bioreason.cli", "eval-curve", "--models", str(root / "model"),
                           str(root / "model"), "--labels", "1", "2", "--data", str(root / "data"), "--max-examples",
                           "2", "--out", str(tmp_path / "curve")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    points = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert [p["label"] for p in points] == ["1", "2"] and (tmp_path / "curve" / "curve.png").exists()
    assert points[0]["id_test"] == points[1]["id_test"]  # the same model twice gives the same point


def test_a_grid_axis_is_reported_as_a_paired_difference_matched_on_the_other_axes(tmp_path):
    """cpt on vs off at two SFT budgets over two seeds: each budget gets its own paired comparison, the seeds matched
    (seed s with CPT against seed s without), the last stage's per-record vectors stacked as seeds."""
    from bioreason.evaluation.study_report import axis_pairs

    out = str(tmp_path)
    vectors = {  # (cpt, budget, seed) -> the last stage's OOD vector over the same 4 records
        (False, 64, 0): [0, 0, 1, 1], (True, 64, 0): [1, 1, 1, 1],
        (False, 64, 1): [0, 1, 1, 1], (True, 64, 1): [1, 1, 1, 1],
        (False, 128, 0): [1, 1, 1, 1], (True, 128, 0): [1, 1, 1, 0],
        (False, 128, 1): [1, 1, 1, 1], (True, 128, 1): [1, 1, 1, 1],
    }
    for (cpt, budget, seed), ood in vectors.items():
        fake_run(out, f"cpt-{cpt}_seed-{seed}_sft-{budget}", {"cpt": cpt, "seed": seed, "sft_examples": budget},
                 0.5, sum(ood) / 4, sft_examples=budget, correct=[{"ood": [0, 0, 0, 0]}, {"ood": ood}])
    pairs = {c["given"]["sft_examples"]: c for c in axis_pairs(out, "cpt") if c["split"] == "ood"}
    assert set(pairs) == {"64", "128"} and all(c["a"] is False and c["b"] is True for c in pairs.values())
    assert pairs["64"]["seeds"] == 2 and pairs["64"]["n"] == 4
    assert pairs["64"]["difference"] == 3 / 8 and (pairs["64"]["a_only"], pairs["64"]["b_only"]) == (0, 3)
    assert pairs["128"]["difference"] == -1 / 8
    study.harvest(out)
    report = open(write_study_report(out)).read()
    assert "- `cpt` True vs False (sft_examples=64): OOD +0.375 [" in report
    assert "- `cpt` True vs False (sft_examples=128): OOD -0.125 [" in report
    assert "- `sft_examples` 128 vs 64 (cpt=False): OOD +0.375 [" in report  # every axis, matched on the others


def test_two_cells_that_differ_in_two_axes_pair_by_seed(tmp_path):
    """The seed study's rank pair (SFT 256, RL 16) against the quickstart's (16, 4): both axes differ, so
    `axis_pairs` cannot pair them; `cell_pairs` matches the cells' runs by seed and stacks them on the same records,
    by the last stage unless a stage is named. A cell that matches two runs of one seed is refused, not averaged."""
    from bioreason.evaluation.study_report import cell_pairs

    out = str(tmp_path)
    for seed, (small, large) in enumerate([([0, 0, 1, 1], [1, 1, 1, 1]), ([0, 1, 1, 1], [0, 1, 1, 1])]):
        for ranks, ood in (((16, 4), small), ((256, 16), large), ((16, 16), [0, 0, 0, 0])):
            fake_run(out, f"r{ranks[0]}-{ranks[1]}_seed-{seed}", {"sft.lora_r": ranks[0], "grpo.lora_r": ranks[1],
                                                                 "seed": seed},
                     0.5, sum(ood) / 4, correct=[{"ood": [1, 1, 1, 1]}, {"ood": ood}])
    [final] = cell_pairs(out, {"sft.lora_r": 16, "grpo.lora_r": 4}, {"sft.lora_r": 256, "grpo.lora_r": 16})
    assert (final["split"], final["seeds_matched"], final["seeds"], final["n"]) == ("ood", [0, 1], 2, 4)
    assert final["difference"] == 2 / 8 and (final["a_only"], final["b_only"]) == (0, 2)
    [sft] = cell_pairs(out, {"sft.lora_r": 16, "grpo.lora_r": 4}, {"sft.lora_r": 256, "grpo.lora_r": 16},
                       stage="sft")
    assert sft["difference"] == 0  # the SFT vectors, not the last stage's
    with pytest.raises(ValueError, match="more than one run of seed 0"):
        cell_pairs(out, {"sft.lora_r": 16}, {"sft.lora_r": 256})  # two RL ranks under SFT rank 16


def curve_run(out: str, name: str, axes: dict, points: dict, dataset: str = "benchmark:pbmc_cell_type") -> None:
    """A finished run whose SFT curve holds per-record vectors: `points` {step: {split: [0/1 ...]}}."""
    fake_run(out, name, axes, 0.5, 0.5)
    run_dir = os.path.join(out, "runs", name)
    with open(os.path.join(run_dir, "config.yaml"), "w") as fh:
        fh.write(f"dataset: {dataset}\nmax_eval_examples: null\n")
    with open(os.path.join(run_dir, "metrics.json")) as fh:
        metrics = json.load(fh)
    metrics["curve"] = [{"stage": "sft", "step": step, **{split: {"accuracy": sum(v) / len(v), "correct": v}
                                                        for split, v in splits.items()}}
                        for step, splits in points.items()]
    with open(os.path.join(run_dir, "metrics.json"), "w") as fh:
        json.dump(metrics, fh)


def test_along_sft_the_step_is_chosen_on_validation_and_the_last_step_paired_against_it(tmp_path):
    """Issue 27's "OOD peaks early, then declines": the step is chosen on the seeds' mean validation curve (step 2
    here), never on OOD itself (whose own best is step 1), and OOD at the last step is paired against that step on the
    same records, stacked over the seeds; a run scored on other records stays out of the stack."""
    from bioreason.evaluation.study_report import curve_pairs

    out = str(tmp_path)
    seeds = {  # seed -> {step: {split: vector}}; validation best at step 2 for both seeds
        0: {1: {"validation": [1, 0, 0], "ood": [1, 1, 1, 1]}, 2: {"validation": [1, 1, 1], "ood": [1, 1, 1, 0]},
            3: {"validation": [1, 1, 0], "ood": [1, 0, 0, 0]}},
        1: {1: {"validation": [0, 0, 0], "ood": [1, 1, 1, 1]}, 2: {"validation": [1, 1, 0], "ood": [1, 1, 0, 0]},
            3: {"validation": [1, 0, 0], "ood": [1, 1, 0, 0]}},
    }
    for seed, points in seeds.items():
        curve_run(out, f"seed-{seed}", {"seed": seed}, points)
    [ood] = curve_pairs(out)
    assert (ood["split"], ood["steps"], ood["chosen_step"], ood["last_step"]) == ("ood", [1, 2, 3], 2, 3)
    assert ood["peak_step"] == 1 and ood["accuracy"] == [1.0, 5 / 8, 3 / 8]  # OOD's own best: shown, not chosen
    assert (ood["seeds"], ood["n"]) == (2, 4)
    assert ood["difference"] == 3 / 8 - 5 / 8 and (ood["a_only"], ood["b_only"]) == (2, 0)
    curve_run(out, "seed-2", {"seed": 2}, seeds[0], dataset="benchmark:antibody_chain")  # other records
    assert curve_pairs(out) == []  # not stacked with the others, and not paired record by record either
    shutil.rmtree(os.path.join(out, "runs", "seed-2"))
    study.harvest(out)
    report = open(write_study_report(out)).read()
    assert "- OOD: step 2 0.625, last step 3 0.375, last minus chosen -0.250 [" in report


def choice_run(out: str, name: str, axes: dict, validation: list[int]) -> None:
    """A finished validation-only run of a choosing study: its SFT stage's per-record validation vector."""
    run_dir = os.path.join(out, "runs", name)
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "metrics.json"), "w") as fh:
        json.dump({"stages": [{"name": "sft", "correct": {"validation": validation}}]}, fh)
    with open(os.path.join(run_dir, "axes.json"), "w") as fh:
        json.dump(axes, fh)
    open(os.path.join(run_dir, "DONE"), "w").close()


def test_choose_config_takes_the_cheapest_config_not_worse_than_the_best(tmp_path):
    """docs/EVALUATION.md's rule on hand-made validation vectors (20 records, 2 seeds): 1024 examples is best (all
    right); 512 misses one record per seed (its paired interval reaches 0: chosen); 256 misses half (wholly below)."""
    from bioreason.evaluation.study_report import choice_text, choose_config

    out = str(tmp_path)
    wrong = {256: 10, 512: 1, 1024: 0}
    for budget, misses in wrong.items():
        for seed in (0, 1):
            vector = [0] * misses + [1] * (20 - misses)
            choice_run(out, f"seed-{seed}_sft-{budget}", {"seed": seed, "sft_examples": budget}, vector)
    choice = choose_config(out)
    assert choice["best"] == {"sft_examples": 1024} and choice["chosen"] == {"sft_examples": 512}
    rows = {r["config"]["sft_examples"]: r for r in choice["configs"]}
    assert [r["config"]["sft_examples"] for r in choice["configs"]] == [256, 512, 1024]  # cost order
    assert rows[256]["vs_best"]["difference"] == -0.5 and rows[256]["vs_best"]["difference_hi"] < 0
    assert rows[512]["vs_best"]["difference"] == -0.05 and rows[512]["vs_best"]["difference_hi"] >= 0
    assert rows[1024]["vs_best"] is None and choice["seeds"] == [0, 1]
    text = choice_text(out)
    assert "**sft_examples=512**" in text and "- sft_examples=1024: validation 1.000 (the best)" in text
    assert "- sft_examples=256: validation 0.500; minus the best -0.500 [" in text


def test_choose_config_breaks_an_accuracy_tie_towards_the_cheaper_config(tmp_path):
    from bioreason.evaluation.study_report import choose_config

    out = str(tmp_path)
    for cpt in (False, True):
        for budget in (64, 128):
            vector = [1, 1, 0, 1] if budget == 128 else [0, 0, 0, 1]
            choice_run(out, f"cpt-{cpt}_sft-{budget}", {"cpt": cpt, "sft_examples": budget}, vector)
    choice = choose_config(out)
    assert choice["best"] == {"cpt": False, "sft_examples": 128}  # CPT and no CPT tie: no CPT is cheaper
    assert [tuple(r["config"].values()) for r in choice["configs"]] == [
        (False, 64), (True, 64), (False, 128), (True, 128)]


def test_choose_config_orders_ranks_and_other_numbers_by_value_not_by_their_text(tmp_path):
    """rank_grid_antibody chose RL rank 16 over an equally good 4 because "16" sorts before "4" as text: a LoRA rank is
    a cost (smaller first), and an axis outside the cost order still sorts its numbers by value."""
    from bioreason.evaluation.study_report import choose_config

    out = str(tmp_path)
    for rank in (4, 16):
        for rate in (0.0005, 0.00003125):
            choice_run(out, f"r-{rank}_lr-{rate}", {"grpo.lora_r": rank, "learning_rate": rate}, [1, 1, 0, 1])
    choice = choose_config(out)
    assert choice["chosen"] == choice["best"] == {"grpo.lora_r": 4, "learning_rate": 0.00003125}
    assert [tuple(r["config"].values()) for r in choice["configs"]] == [
        (4, 0.00003125), (4, 0.0005), (16, 0.00003125), (16, 0.0005)]
