"""Issue 27's SFT-length study (`recipes/configs/study/sft_length_pbmc.yaml`): one SFT run a seed, scored on
validation, ID and OOD every `eval_every_steps`. Prints each seed's curve and the mean curve, then
`study_report.curve_pairs`: the step chosen on the seeds' mean validation curve, and ID / OOD at the last step against
that step, paired on the same records over the seeds ("OOD peaks early, then declines" reads as a last-minus-chosen
difference below 0). Writes `<study folder name>.json` beside this file.

    PYTHONPATH=. .venv/bin/python docs/measurements/sft_length/summarize.py runs/study/sft_length_pbmc
"""

from __future__ import annotations

import json
import os
import sys

from bioreason.evaluation.intervals import format_difference
from bioreason.evaluation.study_report import curve_pairs, finished_metrics

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("validation", "id", "ood")


def curves(study: str) -> dict[str, list[dict]]:
    """{run: [{"step", "examples", split: accuracy ...}, ...]} from each finished run's SFT curve, and
    {run + ":seconds": its training and scoring time}."""
    found: dict = {}
    for name, _, metrics, _ in finished_metrics(study):
        with open(os.path.join(study, "runs", name, "run_config.json"), encoding="utf-8") as fh:
            batch = json.load(fh)["pipeline"]["sft"]["per_device_train_batch_size"]
        found[name] = [{"step": p["step"], "examples": p["step"] * batch,
                        **{k: p[k]["accuracy"] for k in SPLITS if k in p}}
                       for p in metrics["curve"] if p["stage"] == "sft"]
        found[name + ":seconds"] = sum(s["seconds"] for s in metrics["stages"])
    return found


def main(study: str) -> None:
    summary = {"curves": curves(study), "pairs": curve_pairs(study)}
    with open(os.path.join(HERE, f"{os.path.basename(os.path.normpath(study))}.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    for name, points in summary["curves"].items():
        if name.endswith(":seconds"):
            print(name, points)
            continue
        print(name)
        for p in points:
            print(f"  step {p['step']:4d} ({p['examples']} examples): "
                  + " / ".join(f"{p.get(k, float('nan')):.3f}" for k in SPLITS))
    for c in summary["pairs"]:
        print(f"{c['split']}: mean curve {[round(a, 3) for a in c['accuracy']]} at steps {c['steps']}")
        print(f"  chosen on validation: step {c['chosen_step']} ({c['accuracy_a']:.3f}); last step "
              f"{c['last_step']} ({c['accuracy_b']:.3f}); last minus chosen {format_difference(c)}; the split's "
              f"own best step {c['peak_step']}")


if __name__ == "__main__":
    main(sys.argv[1])
