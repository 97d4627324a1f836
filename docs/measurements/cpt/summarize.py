"""Issue 27's CPT studies (`recipes/configs/study/cpt_*_antibody.yaml`): per run, the accuracy after SFT (and after
CPT, where it ran) on each split it scored, with n; then, for each grid axis named (default: cpt), every value against
the first, given the other axes, paired on the same records over the seeds (`study_report.axis_pairs`). Writes
`<study folder name>.json` beside this file and prints the figures.

    PYTHONPATH=. .venv/bin/python docs/measurements/cpt/summarize.py runs/study/cpt_on_off_antibody
    PYTHONPATH=. .venv/bin/python docs/measurements/cpt/summarize.py runs/study/cpt_norm_antibody \
        cpt projector_output_norm
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


def summarize(study: str, axes: tuple[str, ...] = ("cpt",)) -> dict:
    out: dict = {"runs": {}}
    for path in sorted(glob.glob(os.path.join(study, "runs", "*", "metrics.json"))):
        with open(path, encoding="utf-8") as fh:
            metrics = json.load(fh)
        stages = {s["name"]: s for s in metrics["stages"]}
        out["runs"][os.path.basename(os.path.dirname(path))] = {
            name: {"accuracy": {k: stages[name][k]["accuracy"] for k in SPLITS if stages[name].get(k)},
                   "n": {k: stages[name][k]["n"] for k in SPLITS if stages[name].get(k)},
                   "seconds": stages[name]["seconds"],
                   "shared": "shared_from" in stages[name]}
            for name in ("cpt", "sft") if name in stages}
        for name in ("probe", "majority"):
            out[name] = {k: v["accuracy"] for k, v in metrics["baselines"][name].items() if k in SPLITS and v}
    for axis in axes:  # the cpt on / off study's JSON keeps its first name for the cpt axis
        out["cpt_vs_none" if axis == "cpt" else f"{axis}_pairs"] = axis_pairs(study, axis, stage="sft")
    return out


def main(study: str, axes: tuple[str, ...]) -> None:
    summary = summarize(study, axes)
    name = os.path.basename(os.path.normpath(study))
    with open(os.path.join(HERE, f"{name}.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    print("probe", summary["probe"], "majority", summary["majority"])
    for run, stages in summary["runs"].items():
        for stage, s in stages.items():
            print(run, stage, {k: round(v, 3) for k, v in s["accuracy"].items()}, "n", s["n"],
                  f"{s['seconds']} s" + (" (shared)" if s["shared"] else ""))
    for axis in axes:
        for c in summary["cpt_vs_none" if axis == "cpt" else f"{axis}_pairs"]:
            print(f"{axis} {c['b']} vs {c['a']}, given {c['given']}, {c['split']}: {format_difference(c)}")


if __name__ == "__main__":
    main(sys.argv[1], tuple(sys.argv[2:]) or ("cpt",))
