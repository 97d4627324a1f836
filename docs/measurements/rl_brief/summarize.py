"""Issue 27's "RL after a brief SFT" studies (`recipes/configs/study/rl_after_brief_sft_<benchmark>.yaml`): per seed,
SFT and GRPO accuracy on validation / ID / OOD, GRPO vs its own SFT checkpoint as a paired difference on the same
records, and what GRPO's sampling did (steps run, steps without any advantage, groups drawn / with advantage); then
GRPO vs SFT pooled over the seeds, and how often each label was answered after each stage (mean over the seeds: where
RL moves the answers). Writes `<name>.json` beside this file and prints the figures.

    PYTHONPATH=. .venv/bin/python docs/measurements/rl_brief/summarize.py runs/study/rl_brief_antibody antibody_chain
    PYTHONPATH=. .venv/bin/python docs/measurements/rl_brief/summarize.py runs/study/rl_brief_pbmc_768 \
        pbmc_cell_type_768
"""

from __future__ import annotations

import glob
import json
import os
import sys

from bioreason.evaluation.intervals import format_difference
from bioreason.evaluation.study_report import stage_pairs

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("validation", "id", "ood")


def summarize(study: str) -> dict:
    out: dict = {"seeds": {}}
    for path in sorted(glob.glob(os.path.join(study, "runs", "*", "metrics.json"))):
        with open(path, encoding="utf-8") as fh:
            metrics = json.load(fh)
        stages = {s["name"]: s for s in metrics["stages"]}
        sft, grpo = stages["sft"], stages["grpo"]
        out["seeds"][os.path.basename(os.path.dirname(path))] = {
            "sft": {k: sft[k]["accuracy"] for k in SPLITS},
            "grpo": {k: grpo[k]["accuracy"] for k in SPLITS},
            "grpo_vs_sft": grpo["vs_previous"],
            "grpo_steps": grpo["steps"], "grpo_seconds": grpo["seconds"], "sft_seconds": sft["seconds"],
            "zero_advantage_steps": grpo.get("zero_advantage_steps"), "stopped_early": grpo.get("stopped_early"),
            "dynamic_sampling": grpo.get("dynamic_sampling"),
            "probe": {k: metrics["baselines"]["probe"][k]["accuracy"] for k in SPLITS},
            "n": {k: grpo[k]["n"] for k in SPLITS},
            "prediction_rate": {stage: {k: stages[stage][k].get("prediction_rate") for k in SPLITS}
                                for stage in ("sft", "grpo")},
        }
    out["grpo_vs_sft_pooled"] = stage_pairs(study, "sft", "grpo")
    out["prediction_rate_mean"] = {
        stage: {k: mean_rates([s["prediction_rate"][stage][k] for s in out["seeds"].values()]) for k in SPLITS}
        for stage in ("sft", "grpo")}
    return out


def mean_rates(rates: list[dict | None]) -> dict:
    """Each label's share of the answers, averaged over the seeds (a label a seed never answered counts 0)."""
    rates = [r for r in rates if r]
    labels = sorted({label for r in rates for label in r})
    return {label: sum(r.get(label, 0.0) for r in rates) / len(rates) for label in labels} if rates else {}


def main(study: str, benchmark: str) -> None:
    summary = summarize(study)
    with open(os.path.join(HERE, f"{benchmark}.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    for seed, s in summary["seeds"].items():
        print(seed, "n", s["n"], "probe", {k: round(v, 3) for k, v in s["probe"].items()})
        print("  SFT ", {k: round(v, 3) for k, v in s["sft"].items()}, f"{s['sft_seconds']} s")
        print("  GRPO", {k: round(v, 3) for k, v in s["grpo"].items()}, f"{s['grpo_steps']} steps, "
              f"{s['grpo_seconds']} s, zero-advantage steps {s['zero_advantage_steps']}, {s['dynamic_sampling']}, "
              f"stopped: {s['stopped_early']}")
        for k in SPLITS:
            print(f"  GRPO vs SFT {k}: {format_difference(s['grpo_vs_sft'][k])}")
    for k, comparison in summary["grpo_vs_sft_pooled"].items():
        print(f"pooled GRPO vs SFT {k}: {format_difference(comparison)}")
    for k in SPLITS:
        sft, grpo = summary["prediction_rate_mean"]["sft"][k], summary["prediction_rate_mean"]["grpo"][k]
        shares = [f"{label} {sft.get(label, 0):.2f} -> {grpo.get(label, 0):.2f}" for label in sorted({*sft, *grpo})]
        print(f"answers {k} (share, SFT -> GRPO):", "; ".join(shares))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
