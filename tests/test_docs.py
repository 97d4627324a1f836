"""Published figures trace to artifacts: every number in the README's quickstart table and per-benchmark table is the
committed metrics.json of the run that produced it (docs/measurements/bridge/), to the 3 decimals shown."""

from __future__ import annotations

import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRIDGE = os.path.join(ROOT, "docs", "measurements", "bridge")


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        return fh.read()


def artifact(name: str) -> dict:
    with open(os.path.join(BRIDGE, name), encoding="utf-8") as fh:
        return json.load(fh)


def table_row(label_start: str, header: str = "") -> list[str]:
    """The cells of the README table row whose first cell starts with `label_start` (in the first table after the
    line `header` begins with)."""
    lines = readme().splitlines()
    if header:
        lines = lines[next(i for i, line in enumerate(lines) if line.startswith(header)):]
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].startswith(label_start):
            return cells
    raise AssertionError(f"README has no table row starting {label_start!r}")


def pair(cell: str) -> tuple[float, float]:
    a, b = re.fullmatch(r"([\d.]+) / ([\d.]+)", cell).groups()
    return float(a), float(b)


def shown(value: float, cell: str | float) -> bool:
    """A figure shown to 3 decimals is the value (rounded either way at a tie)."""
    return abs(float(cell) - value) <= 0.0005 + 1e-9


def stage(metrics: dict, name: str) -> dict:
    return next(s for s in metrics["stages"] if s["name"] == name)


QUICKSTART_ROWS = {"CPT (": "cpt", "SFT (": "sft", "GRPO (": "grpo"}
PROTOCOL = os.path.join(ROOT, "docs", "measurements", "protocol")


def quickstart_metrics() -> dict:
    with open(os.path.join(PROTOCOL, "quickstart_metrics.json"), encoding="utf-8") as fh:
        return json.load(fh)


def with_interval(metrics: dict, key: str, cell: str) -> bool:
    """A cell "0.990 [0.96, 1.00]" is the value to 3 decimals and its interval to 2 ("-" where it is absent)."""
    if metrics.get(key) is None:
        return cell == "-"
    value, lo, hi = re.fullmatch(r"([\d.-]+) \[([\d.-]+), ([\d.-]+)\]", cell).groups()
    return (shown(metrics[key], value) and abs(float(lo) - metrics[f"{key}_lo"]) <= 0.005 + 1e-9
            and abs(float(hi) - metrics[f"{key}_hi"]) <= 0.005 + 1e-9)


@pytest.mark.parametrize("label", QUICKSTART_ROWS)
def test_the_quickstart_table_is_its_committed_metrics(label):
    s = stage(quickstart_metrics(), QUICKSTART_ROWS[label])
    _, steps, seconds, val, id_acc, ood_acc, id_rel, ood_rel = table_row(label)
    assert int(steps) == s["steps"] and float(seconds) == s["seconds"]
    for metrics, cell in ((s["validation"], val), (s["id"], id_acc), (s["ood"], ood_acc)):
        assert with_interval(metrics, "accuracy", cell), (label, cell)
    assert with_interval(s["id"], "reliance_cross_label", id_rel) and with_interval(s["ood"], "reliance_cross_label",
                                                                                     ood_rel)


@pytest.mark.parametrize("name", ["majority", "probe"])
def test_the_quickstart_baselines_are_its_committed_metrics(name):
    baseline = quickstart_metrics()["baselines"][name]
    cells = table_row(f"*{name} baseline*")
    for key, cell in zip(("validation", "id", "ood"), cells[3:6], strict=True):
        assert with_interval(baseline[key], "accuracy", cell), (name, cell)


def test_the_quickstart_paired_differences_are_its_committed_metrics():
    from bioreason.evaluation.intervals import format_difference

    text = readme()
    for s in quickstart_metrics()["stages"]:
        for key, comparison in s.get("vs_previous", {}).items():
            assert format_difference(comparison) in text, (s["name"], key)


BENCHMARK_ROWS = {"`antibody_chain`": "quickstart_bf16_metrics.json",
                  "`peptide_activity`": "peptide_activity_metrics.json",
                  "`pbmc_cell_type`": "pbmc_cell_type_metrics.json",
                  "`jaspar_tf_class` ": "jaspar_tf_class_metrics.json",
                  "`jaspar_tf_class_1kb`": "jaspar_tf_class_1kb_metrics.json"}


@pytest.mark.parametrize("label", BENCHMARK_ROWS)
def test_each_per_benchmark_row_is_its_committed_metrics(label):
    metrics = artifact(BENCHMARK_ROWS[label])
    _, majority, probe, sft, grpo, reliance, _ = table_row(label, header="| benchmark | majority | probe |")
    for cell, scores in ((majority, metrics["baselines"]["majority"]), (probe, metrics["baselines"]["probe"]),
                         (sft, stage(metrics, "sft")), (grpo, stage(metrics, "grpo"))):
        assert all(shown(scores[split]["accuracy"], v) for split, v in zip(("id", "ood"), pair(cell), strict=True))
    final = stage(metrics, "grpo")
    assert all(shown(final[split]["reliance"], v) for split, v in zip(("id", "ood"), pair(reliance), strict=True))


def bench_rows() -> list[tuple[list[str], list[str]]]:
    """(figure names, measured figures as shown) of each row of the README's benchmark table."""
    rows = []
    for line in readme().splitlines():
        if line.startswith("| `p"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            names = re.findall(r"`(p\d+_\w+)`", cells[0])
            shown_values = re.findall(r"(\d+(?:\.\d+)?)", cells[1].split("(")[0])
            rows.append((names, shown_values[:len(names)]))
    return rows


def test_the_readme_benchmark_table_is_bench_results():
    """Each measured figure is `bench/results.json`'s, to the decimals shown (`make bench` writes both that file and
    BENCHMARKS.md)."""
    with open(os.path.join(ROOT, "bench", "results.json"), encoding="utf-8") as fh:
        results = json.load(fh)["results"]
    rows = bench_rows()
    assert {name for names, _ in rows for name in names} == set(results)
    for names, values in rows:
        assert len(values) == len(names), names
        for name, text in zip(names, values, strict=True):
            decimals = len(text.split(".")[1]) if "." in text else 0
            assert abs(results[name]["value"] - float(text)) <= 0.5 * 10 ** -decimals + 1e-9, (name, text)


def seed_summaries() -> list[str]:
    return sorted(name for name in os.listdir(PROTOCOL) if name.endswith("_seeds.json"))


@pytest.mark.parametrize("name", seed_summaries())
def test_each_three_seed_row_is_its_committed_summary(name):
    """The README's 3-seed rows and GRPO-vs-SFT differences are `seed_rows.py`'s rendering of the committed JSON."""
    import importlib.util

    from bioreason.evaluation.intervals import format_difference

    spec = importlib.util.spec_from_file_location("seed_rows", os.path.join(PROTOCOL, "seed_rows.py"))
    seed_rows = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed_rows)
    with open(os.path.join(PROTOCOL, name), encoding="utf-8") as fh:
        summary = json.load(fh)
    benchmark = name.removesuffix("_seeds.json")
    text = readme()
    assert seed_rows.row(summary, benchmark) in text.splitlines()
    assert summary["sft_id_accuracy"]["seeds"] == 3
    for comparison in summary["grpo_vs_sft"].values():
        assert comparison["seeds"] == 3 and format_difference(comparison) in text


def choices() -> list[str]:
    return sorted(name for name in os.listdir(PROTOCOL) if name.endswith("_choice.json"))


@pytest.mark.parametrize("name", choices())
def test_a_config_validation_chose_is_the_one_its_row_runs(name):
    """Where the README says validation chose a benchmark's config, the committed choice (`choose.py`'s JSON) is the
    config its 3-seed row runs (`seeds_<benchmark>.yaml`), and the README shows its validation figure."""
    import yaml

    from bioreason.evaluation.intervals import format_difference

    with open(os.path.join(PROTOCOL, name), encoding="utf-8") as fh:
        choice = json.load(fh)
    benchmark = name.removesuffix("_choice.json")
    text = " ".join(readme().split())  # the paragraph's line breaks fall anywhere
    assert f"`{benchmark}`: **validation chose its config**" in text
    assert choice["split"] == "validation" and choice["seeds"] == [0, 1, 2]
    with open(os.path.join(ROOT, "recipes", "configs", "study", f"seeds_{benchmark}.yaml"), encoding="utf-8") as fh:
        row = yaml.safe_load(fh)["base"]
    with open(os.path.join(PROTOCOL, f"{benchmark}_seeds.json"), encoding="utf-8") as fh:
        trained = json.load(fh).get("budget", {})  # rows measured before seed_rows.py recorded it have none
    for axis, value in choice["chosen"].items():
        ran = ("cpt" in row["stages"]) if axis == "cpt" else row[axis]
        assert ran == value, (axis, ran, value)
        if axis in trained:  # the row's runs trained the chosen config, not only its yaml says so
            assert trained[axis] == value, (axis, trained[axis], value)
    chosen = next(r for r in choice["configs"] if r["config"] == choice["chosen"])
    against = "the best" if chosen["vs_best"] is None else format_difference(chosen["vs_best"]).split(" (n=")[0]
    assert f"{chosen['accuracy']:.3f} ({against}" in text
