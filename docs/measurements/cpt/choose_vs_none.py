"""Validation of the CPT-on runs of choose_cpt_antibody (its grid cut to CPT on: docs/choose-cpt-antibody/config.yaml)
against the CPT-off 128-example runs of cpt_imgt_antibody (same records, same seeds), paired over seeds.

    PYTHONPATH=. .venv/bin/python docs/measurements/cpt/choose_vs_none.py runs/study/cpt_imgt_antibody \
        runs/choose/cpt_antibody_on
"""

import sys
from collections import defaultdict

from bioreason.evaluation.intervals import format_difference, paired_comparison
from bioreason.evaluation.study_report import finished_runs

none = {a["seed"]: s["sft"]["correct"]["validation"] for a, s, _ in finished_runs(sys.argv[1])
        if not a.get("cpt") and a.get("sft_examples") == 128 and a.get("cpt.descriptions") == "own"}
cells = defaultdict(dict)
for a, s, _ in finished_runs(sys.argv[2]):
    cells[(a["cpt_examples"], a["cpt.learning_rate"])][a["seed"]] = s["sft"]["correct"]["validation"]
for cell, by_seed in sorted(cells.items()):
    seeds = sorted(set(by_seed) & set(none))
    acc = [round(sum(by_seed[x]) / len(by_seed[x]), 3) for x in seeds]
    c = paired_comparison([none[x] for x in seeds], [by_seed[x] for x in seeds])
    print(f"cpt_examples {cell[0]}, lr {cell[1]}: seeds {seeds} validation {acc}; minus none {format_difference(c)}")
