"""The content control of a CPT on / off study, run as its own study (`recipes/configs/study/cpt_control_*.yaml`):
per seed, SFT after CPT on each input's own description ("own"), SFT after CPT on another record's description
("other") and SFT alone ("none"), paired on the same records over the seeds (`intervals.paired_comparison`). The
on / off study supplies own and none, the control study other; runs pair by seed, and only where all three were
scored on the same records. Writes `<control study folder name>.json` beside this file and prints the figures.

    PYTHONPATH=. .venv/bin/python docs/measurements/cpt/control.py runs/study/cpt_on_off_pbmc_768 \
        runs/study/cpt_control_pbmc
"""

from __future__ import annotations

import json
import os
import sys

from bioreason.evaluation.intervals import format_difference, paired_comparison
from bioreason.evaluation.study_report import finished_runs

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("validation", "id", "ood")
PAIRS = (("none", "own"), ("none", "other"), ("other", "own"))  # (a, b): b minus a


def arms(on_off: str, control: str) -> dict[str, dict]:
    """{arm: {seed: (per-split 0/1 vectors of the SFT stage, records key)}}."""
    found: dict[str, dict] = {"none": {}, "own": {}, "other": {}}
    for study, from_control in ((on_off, False), (control, True)):
        for axes, stages, key in finished_runs(study):
            if from_control:
                arm = "other" if axes.get("cpt.descriptions") == "other" else None
            else:
                arm = "own" if axes.get("cpt") else "none"
            if arm and "sft" in stages:
                found[arm][axes["seed"]] = (stages["sft"]["correct"], key)
    return found


def compare(found: dict[str, dict]) -> list[dict]:
    out = []
    for a, b in PAIRS:
        seeds = sorted(s for s in found[a] if s in found[b] and found[a][s][1] == found[b][s][1])
        for split in SPLITS:
            pairs = [(found[a][s][0].get(split), found[b][s][0].get(split)) for s in seeds]
            if not seeds or any(x is None or y is None for x, y in pairs):
                continue
            comparison = paired_comparison([x for x, _ in pairs], [y for _, y in pairs])
            out.append({"a": a, "b": b, "split": split, "seeds": seeds, **comparison})
    return out


def main(on_off: str, control: str) -> None:
    found = arms(on_off, control)
    summary = {"accuracy": {arm: {seed: {k: sum(v) / len(v) for k, v in vectors.items()}
                                  for seed, (vectors, _) in by_seed.items()} for arm, by_seed in found.items()},
               "pairs": compare(found)}
    name = os.path.basename(os.path.normpath(control))
    with open(os.path.join(HERE, f"{name}.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    for arm, by_seed in summary["accuracy"].items():
        for seed, acc in sorted(by_seed.items()):
            print(arm, "seed", seed, {k: round(v, 3) for k, v in acc.items()})
    for c in summary["pairs"]:
        print(f"{c['b']} minus {c['a']}, {c['split']}: {format_difference(c)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
