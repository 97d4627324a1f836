"""Issue 25's pbmc comparison: the expression MLP at its seeded random init against scanpy_pca, 3 seeds each, every
run scored on the same records (`recipes/configs/study/rna_encoder_pbmc.yaml`). Per arm: mean ± sd over seeds of the
encoder probe, the input probe and the model after SFT and GRPO (validation / ID / OOD accuracy); then scanpy_pca
minus MLP after each stage as a paired difference over seeds and records (`bioreason.evaluation.intervals`).
Writes compare.json beside this script and prints the figures.

    PYTHONPATH=. .venv/bin/python docs/measurements/rna_encoder/compare.py runs/study/rna_encoder_pbmc
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np

from bioreason.evaluation.intervals import paired_comparison

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("validation", "id", "ood")


def arm_of(run: str) -> str:
    return "scanpy_pca" if "scanpy_pca" in run else "expression_mlp"


def load(study: str) -> dict[str, list[dict]]:
    arms: dict[str, list[dict]] = {}
    for path in sorted(glob.glob(os.path.join(study, "runs", "*", "metrics.json"))):
        with open(path, encoding="utf-8") as fh:
            arms.setdefault(arm_of(os.path.basename(os.path.dirname(path))), []).append(json.load(fh))
    return arms


def stat(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 4), "sd": round(float(np.std(values, ddof=1)), 4) if len(values) > 1
            else 0.0, "values": [round(v, 4) for v in values]}


def summarize(arms: dict[str, list[dict]]) -> dict:
    out: dict = {"arms": {}, "scanpy_pca_minus_mlp": {}}
    for arm, runs in arms.items():
        row: dict = {"seeds": len(runs)}
        for name in ("majority", "probe", "input_probe"):
            row[name] = {k: stat([r["baselines"][name][k]["accuracy"] for r in runs]) for k in SPLITS
                         if k in runs[0]["baselines"].get(name, {})}
        for stage in ("sft", "grpo"):
            records = [next(s for s in r["stages"] if s["name"] == stage) for r in runs]
            row[stage] = {k: stat([s[k]["accuracy"] for s in records]) for k in SPLITS}
        row["n"] = {k: runs[0]["stages"][-1][k]["n"] for k in SPLITS}
        out["arms"][arm] = row
    if {"scanpy_pca", "expression_mlp"} <= set(arms):
        for stage in ("sft", "grpo"):
            for k in SPLITS:
                a = [next(s for s in r["stages"] if s["name"] == stage)["correct"][k] for r in arms["expression_mlp"]]
                b = [next(s for s in r["stages"] if s["name"] == stage)["correct"][k] for r in arms["scanpy_pca"]]
                out["scanpy_pca_minus_mlp"][f"{stage}_{k}"] = paired_comparison(a, b, seed=0)
    return out


def main(study: str) -> None:
    summary = summarize(load(study))
    with open(os.path.join(HERE, "compare.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    for arm, row in summary["arms"].items():
        print(f"{arm} ({row['seeds']} seeds, n {row['n']})")
        for name in ("majority", "probe", "input_probe", "sft", "grpo"):
            print(f"  {name}: " + "  ".join(f"{k} {v['mean']:.3f} ± {v['sd']:.3f}" for k, v in row[name].items()))
    for key, c in summary["scanpy_pca_minus_mlp"].items():
        print(f"scanpy_pca - mlp {key}: {c['difference']:+.3f} [{c['difference_lo']:+.3f}, {c['difference_hi']:+.3f}]"
              f" p={c['p_value']:.2g}")


if __name__ == "__main__":
    main(sys.argv[1])
