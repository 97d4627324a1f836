"""The README's Quickstart table from a quickstart run's metrics.json (copied to `quickstart_metrics.json` beside this
file, which `tests/test_docs.py` checks the README against).

    PYTHONPATH=. .venv/bin/python docs/measurements/protocol/quickstart_rows.py runs/quickstart/metrics.json
"""

from __future__ import annotations

import json
import sys

from bioreason.evaluation.intervals import format_difference, format_score

LABELS = {"cpt": "CPT (projector alignment, 64 examples)", "sft": "SFT (512 examples, labels in equal shares)",
          "grpo": "GRPO (up to 32 prompts x 4 samples)"}


def main(path: str) -> None:
    with open(path, encoding="utf-8") as fh:
        metrics = json.load(fh)
    print("| stage | steps | seconds | validation accuracy | ID accuracy | OOD accuracy | ID cross-label reliance | "
          "OOD cross-label reliance |")
    print("|---|---|---|---|---|---|---|---|")
    for s in metrics["stages"]:
        cells = [format_score(s[k], "accuracy") for k in ("validation", "id", "ood")]
        cells += [format_score(s[k], "reliance_cross_label") for k in ("id", "ood")]
        print(f"| {LABELS.get(s['name'], s['name'])} | {s['steps']} | {s['seconds']} | " + " | ".join(cells) + " |")
    for name, b in metrics["baselines"].items():
        print(f"| *{name} baseline* | | | " + " | ".join(format_score(b[k], "accuracy")
                                                        for k in ("validation", "id", "ood")) + " | | |")
    print()
    for s in metrics["stages"]:
        for key, comparison in s.get("vs_previous", {}).items():
            print(f"- {s['name']} vs {comparison['stage']}, {key}: {format_difference(comparison)}")
    final = metrics["stages"][-1]
    print()
    for key in ("id", "ood"):
        print(key, "reliance", format_score(final[key], "reliance"), "rates", final[key]["prediction_rate"])


if __name__ == "__main__":
    main(sys.argv[1])
