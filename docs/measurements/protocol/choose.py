"""What a choosing study (`recipes/configs/study/choose_<benchmark>.yaml`, validation only) picked, by the rule of
docs/EVALUATION.md (`study_report.choose_config`): every config's validation accuracy over the seeds, its paired
difference from the best with the 95% interval, and the chosen config. Writes `<benchmark>_choice.json` beside this
file (what the README's "which split chose" paragraph is checked against) and prints one line per config.

    PYTHONPATH=. .venv/bin/python docs/measurements/protocol/choose.py runs/choose/antibody_chain antibody_chain
"""

from __future__ import annotations

import json
import os
import sys

from bioreason.evaluation.intervals import format_difference
from bioreason.evaluation.study_report import choose_config

HERE = os.path.dirname(os.path.abspath(__file__))


def main(study: str, benchmark: str) -> None:
    choice = choose_config(study)
    if choice is None:
        raise SystemExit(f"{study}: fewer than two configs scored on validation")
    with open(os.path.join(HERE, f"{benchmark}_choice.json"), "w", encoding="utf-8") as fh:
        json.dump(choice, fh, indent=1)
        fh.write("\n")
    for row in choice["configs"]:
        versus = format_difference(row["vs_best"]) if row["vs_best"] else "the best"
        print(f"{row['config']}: validation {row['accuracy']:.3f}; {versus}")
    print(f"chosen: {choice['chosen']}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
