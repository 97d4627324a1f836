"""Issue 27's CPT on / off study (`recipes/configs/study/cpt_on_off_antibody.yaml`): per run, the accuracy after SFT
(and after CPT, where it ran) on validation / ID / OOD with n; then SFT with CPT against SFT without, at each SFT
budget, paired on the same records over the seeds (`study_report.axis_pairs`). Writes `<study folder name>.json`
beside this file and prints the figures.

    PYTHONPATH=. .venv/bin/python docs/measurements/cpt/summarize.py runs/study/cpt_on_off_antibody
"""

from __future__ import annotations

import glob
import json
import os
import sys

from bioreason.evaluation.intervals import format_difference
from bioreason.evaluation.study_report import axis_pairs

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("validation", "id", "ood")


def summarize(study: str) -> dict:
    out: dict = {"runs": {}}
    for path in sorted(glob.glob(os.path.join(study, "runs", "*", "metrics.json"))):
        with open(path, encoding="utf-8") as fh:
            metrics = json.load(fh)
        stages = {s["name"]: s for s in metrics["stages"]}
        out["runs"][os.path.basename(os.path.dirname(path))] = {
            name: {"accuracy": {k: stages[name][k]["accuracy"] for k in SPLITS},
                   "n": {k: stages[name][k]["n"] for k in SPLITS}, "seconds": stages[name]["seconds"],
                   "shared": "shared_from" in stages[name]}
            for name in ("cpt", "sft") if name in stages}
        out["probe"] = {k: metrics["baselines"]["probe"][k]["accuracy"] for k in SPLITS}
        out["majority"] = {k: metrics["baselines"]["majority"][k]["accuracy"] for k in SPLITS}
    out["cpt_vs_none"] = axis_pairs(study, "cpt", stage="sft")
    return out


def main(study: str) -> None:
    summary = summarize(study)
    name = os.path.basename(os.path.normpath(study))
    with open(os.path.join(HERE, f"{name}.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    print("probe", summary["probe"], "majority", summary["majority"])
    for run, stages in summary["runs"].items():
        for stage, s in stages.items():
            print(run, stage, {k: round(v, 3) for k, v in s["accuracy"].items()}, "n", s["n"],
                  f"{s['seconds']} s" + (" (shared)" if s["shared"] else ""))
    for c in summary["cpt_vs_none"]:
        print(f"SFT after CPT vs SFT alone, {c['given']}, {c['split']}: {format_difference(c)}")


if __name__ == "__main__":
    main(sys.argv[1])
