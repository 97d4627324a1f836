"""Issue 27's rank study (`recipes/configs/study/rank_grid_antibody.yaml`): SFT LoRA rank x RL LoRA rank after a
brief SFT. Per run, accuracy after SFT and after GRPO with n, and what dynamic sampling did; then, over the seeds and
paired on the same records: each rank pair's GRPO against its own SFT (`stage_pairs`), each pair's final model
against the quickstart's pair (SFT 16, RL 4; `cell_pairs`), and SFT rank 256 against 16 after SFT alone. Writes
`<study folder name>.json` beside this file and prints the figures.

    PYTHONPATH=. .venv/bin/python docs/measurements/rank_grid/summarize.py runs/study/rank_grid_antibody
"""

from __future__ import annotations

import json
import os
import sys
from statistics import mean

from bioreason.evaluation.intervals import format_difference
from bioreason.evaluation.study_report import cell_pairs, finished_metrics, stage_pairs

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("validation", "id", "ood")
SFT, RL = "sft.lora_r", "grpo.lora_r"
QUICKSTART = {SFT: 16, RL: 4}


def runs_of(study: str) -> dict[str, dict]:
    """Each finished run's axes, its SFT and GRPO accuracy (with n, seconds, steps) and GRPO's sampling counts."""
    found = {}
    for name, axes, metrics, _ in finished_metrics(study):
        stages = {s["name"]: s for s in metrics["stages"]}
        found[name] = {"axes": axes, **{stage: {"accuracy": {k: s[k]["accuracy"] for k in SPLITS},
                                                "n": {k: s[k]["n"] for k in SPLITS}, "seconds": s["seconds"],
                                                "steps": s["steps"], "shared": "shared_from" in s}
                                        for stage, s in stages.items() if stage in ("sft", "grpo")},
                       "dynamic_sampling": stages.get("grpo", {}).get("dynamic_sampling"),
                       "zero_advantage_steps": stages.get("grpo", {}).get("zero_advantage_steps"),
                       "baselines": {b: {k: metrics["baselines"][b][k]["accuracy"] for k in SPLITS}
                                     for b in ("majority", "probe")}}
    return found


def summarize(study: str) -> dict:
    runs = runs_of(study)
    pairs = sorted({(r["axes"][SFT], r["axes"][RL]) for r in runs.values()})
    cells = {}
    for sft_r, rl_r in pairs:
        where = {SFT: sft_r, RL: rl_r}
        group = [r for r in runs.values() if r["axes"][SFT] == sft_r and r["axes"][RL] == rl_r]
        cells[f"{sft_r}/{rl_r}"] = {
            "seeds": sorted(r["axes"]["seed"] for r in group),
            "sft": {k: mean(r["sft"]["accuracy"][k] for r in group) for k in SPLITS},
            "grpo": {k: mean(r["grpo"]["accuracy"][k] for r in group) for k in SPLITS},
            "grpo_vs_own_sft": stage_pairs(study, "sft", "grpo", where=where),
            "vs_quickstart_pair": cell_pairs(study, QUICKSTART, where) if where != QUICKSTART else [],
            "grpo_seconds": mean(r["grpo"]["seconds"] for r in group)}
    sft_rank = cell_pairs(study, {SFT: 16, RL: 4}, {SFT: 256, RL: 4}, stage="sft")  # one run a seed per SFT rank
    first = next(iter(runs.values()))
    return {"runs": runs, "cells": cells, "sft_rank_256_vs_16_after_sft": sft_rank, **first["baselines"]}


def main(study: str) -> None:
    summary = summarize(study)
    with open(os.path.join(HERE, f"{os.path.basename(os.path.normpath(study))}.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    print("majority", summary["majority"], "probe", summary["probe"])
    for name, r in summary["runs"].items():
        print(name, *(f"{stage} " + " / ".join(f"{r[stage]['accuracy'][k]:.3f}" for k in SPLITS)
                      + f" ({r[stage]['seconds']} s{', shared' if r[stage]['shared'] else ''})"
                      for stage in ("sft", "grpo")), "sampling", r["dynamic_sampling"])
    for cell, e in summary["cells"].items():
        print(f"SFT/RL rank {cell}: SFT", " / ".join(f"{e['sft'][k]:.3f}" for k in SPLITS), "GRPO",
              " / ".join(f"{e['grpo'][k]:.3f}" for k in SPLITS), f"GRPO {e['grpo_seconds']:.0f} s a run")
        for split, c in e["grpo_vs_own_sft"].items():
            print(f"  GRPO vs its SFT, {split}: {format_difference(c)}")
        for c in e["vs_quickstart_pair"]:
            print(f"  final vs 16/4, {c['split']}: {format_difference(c)}")
    for c in summary["sft_rank_256_vs_16_after_sft"]:
        print(f"SFT rank 256 vs 16 after SFT, {c['split']}: {format_difference(c)}")


if __name__ == "__main__":
    main(sys.argv[1])
