"""A README per-benchmark row from a 3-seed study (`recipes/configs/study/seeds_<benchmark>.yaml`): mean ± sd over the
seeds of validation / ID / OOD accuracy after SFT and after GRPO, cross-label reliance after GRPO, the baselines, and
GRPO vs SFT as a paired difference over seeds and records. Writes `<benchmark>_seeds.json` beside this file (what the
README row is checked against) and prints the row.

    PYTHONPATH=. .venv/bin/python docs/measurements/protocol/seed_rows.py runs/seeds/pbmc_cell_type pbmc_cell_type
"""

from __future__ import annotations

import json
import os
import sys

import pandas as pd

from bioreason.evaluation.study_report import stage_pairs

HERE = os.path.dirname(os.path.abspath(__file__))


def summarize(study: str) -> dict:
    table = pd.read_csv(os.path.join(study, "results.csv"))

    def stat(column: str) -> dict:
        values = table[column].dropna()
        return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "seeds": int(len(values)), "values": [float(v) for v in values]}

    out: dict = {"runs": list(table["run"])}
    for stage in ("sft", "grpo"):
        for split in ("validation", "id", "ood"):
            column = f"{stage}_{split}_accuracy"
            if column in table:
                out[column] = stat(column)
    for split in ("id", "ood"):
        for column in (f"grpo_{split}_reliance_cross_label", f"majority_{split}_accuracy", f"probe_{split}_accuracy"):
            if column in table:
                out[column] = stat(column)
    with open(os.path.join(study, "runs", out["runs"][0], "metrics.json"), encoding="utf-8") as fh:
        first = json.load(fh)
    out["n"] = {split: first["stages"][-1][split]["n"] for split in ("validation", "id", "ood")}
    out["budget"] = first["budget"]  # what the row trained: checked against the config validation chose
    out["grpo_vs_sft"] = stage_pairs(study, "sft", "grpo")
    curve = sft_validation_curve(study, out["runs"])
    if curve:
        out["sft_validation_curve"] = curve
    return out


def sft_validation_curve(study: str, runs: list[str]) -> dict:
    """Validation accuracy along SFT (the runs' `eval_every_steps` points, the last one the stage's own score), by
    SFT examples seen: `{examples: {"mean", "sd", "values"}}`, where every run was scored there."""
    by_examples: dict[int, list[float]] = {}
    for run in runs:
        with open(os.path.join(study, "runs", run, "metrics.json"), encoding="utf-8") as fh:
            metrics = json.load(fh)
        with open(os.path.join(study, "runs", run, "run_config.json"), encoding="utf-8") as fh:
            batch = json.load(fh)["pipeline"]["sft"]["per_device_train_batch_size"]
        for point in metrics.get("curve") or []:
            if point["stage"] == "sft" and "accuracy" in point.get("validation", {}):
                by_examples.setdefault(point["step"] * batch, []).append(point["validation"]["accuracy"])
    return {str(k): {"mean": float(pd.Series(v).mean()), "sd": float(pd.Series(v).std(ddof=1)) if len(v) > 1 else 0.0,
                     "values": v}
            for k, v in sorted(by_examples.items()) if len(v) == len(runs)}


def cell(summary: dict, column: str) -> str:
    s = summary[column]
    return f"{s['mean']:.3f} ± {s['sd']:.3f}"


def row(summary: dict, benchmark: str) -> str:
    """The README table row of a summary (the test `tests/test_docs.py` rebuilds it from the committed JSON)."""
    n = summary["n"]
    return (f"| `{benchmark}` | {n['validation']} / {n['id']} / {n['ood']} | "
            + " | ".join(f"{cell(summary, f'{b}_id_accuracy')} / {cell(summary, f'{b}_ood_accuracy')}"
                         for b in ("majority", "probe"))
            + " | " + " | ".join(f"{cell(summary, f'{s}_validation_accuracy')} | {cell(summary, f'{s}_id_accuracy')}"
                                 f" / {cell(summary, f'{s}_ood_accuracy')}" for s in ("sft", "grpo"))
            + f" | {cell(summary, 'grpo_id_reliance_cross_label')} / {cell(summary, 'grpo_ood_reliance_cross_label')}"
            + " |")


def main(study: str, benchmark: str) -> None:
    summary = summarize(study)
    with open(os.path.join(HERE, f"{benchmark}_seeds.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    print(row(summary, benchmark))
    from bioreason.evaluation.intervals import format_difference

    for split, comparison in summary["grpo_vs_sft"].items():
        print(f"GRPO vs SFT, {split}: {format_difference(comparison)}")
    for examples, point in summary.get("sft_validation_curve", {}).items():
        print(f"validation after {examples} SFT examples: {point['mean']:.3f} ± {point['sd']:.3f} {point['values']}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
