"""Issue 27's budget-split study (`recipes/configs/study/budget_split_antibody.yaml`): a fixed number of training
examples split SFT:RL by `rl_fraction`. Per run, accuracy after SFT and after GRPO on validation / ID / OOD with n,
and what GRPO's sampling did; then, over the seeds, each split's final model against SFT alone (rl_fraction 0) and
each split's GRPO against its own SFT, paired on the same records (records resampled, each record's difference
averaged over the seeds). Writes `<study folder name>.json` beside this file and prints the figures.

    PYTHONPATH=. .venv/bin/python docs/measurements/budget_split/summarize.py runs/study/budget_split_antibody
"""

from __future__ import annotations

import ast
import glob
import json
import os
import sys
from statistics import mean

from bioreason.evaluation.intervals import format_difference
from bioreason.evaluation.study_report import axis_pairs, stage_pairs

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("validation", "id", "ood")


def load_runs(study: str) -> dict[str, dict]:
    """Each finished run's axes and stages (by name) from its folder."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(study, "runs", "*", "metrics.json"))):
        folder = os.path.dirname(path)
        if not os.path.exists(os.path.join(folder, "DONE")):
            continue
        with open(path, encoding="utf-8") as fh:
            metrics = json.load(fh)
        with open(os.path.join(folder, "axes.json"), encoding="utf-8") as fh:
            axes = json.load(fh)
        runs[os.path.basename(folder)] = {"axes": axes, "stages": {s["name"]: s for s in metrics["stages"]},
                                          "baselines": metrics["baselines"]}
    return runs


def rollout_rewards(folder: str) -> dict | None:
    """GRPO's logged reward means (sampled rollouts, as the trainer logs them every `logging_steps`): the first
    logged step's and the mean over the logged steps, for correctness and format. Where they sit far from the
    likelihood accuracy, RL is learning from a different model of the task than the one that is scored."""
    path = os.path.join(folder, "log.txt")
    if not os.path.exists(path):  # the committed run folders keep no log: the JSON beside this file has these
        return None
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("{") and "'rewards/format_reward/mean'" in line:
                rows.append(ast.literal_eval(line.strip()))
    if not rows:
        return None
    out = {}
    for key, name in (("rewards/correctness/mean", "correctness"), ("rewards/format_reward/mean", "format"),
                      ("completions/clipped_ratio", "clipped")):
        values = [float(r[key]) for r in rows if key in r]
        out[name] = {"first": values[0], "mean": mean(values), "last": values[-1], "logged": len(values)}
    return out


def summarize(study: str) -> dict:
    runs = load_runs(study)
    out: dict = {"runs": {}, "by_fraction": {}}
    for name, run in runs.items():
        stages = run["stages"]
        out["runs"][name] = {
            "axes": run["axes"],
            **{stage: {"accuracy": {k: s[k]["accuracy"] for k in SPLITS if s.get(k)},
                       "n": {k: s[k]["n"] for k in SPLITS if s.get(k)}, "seconds": s["seconds"],
                       "steps": s.get("steps")}
               for stage, s in stages.items() if stage in ("sft", "grpo")},
            "dynamic_sampling": stages.get("grpo", {}).get("dynamic_sampling"),
            "zero_advantage_steps": stages.get("grpo", {}).get("zero_advantage_steps"),
            "rollout_rewards": rollout_rewards(os.path.join(study, "runs", name)) if "grpo" in stages else None,
        }
        for base in ("majority", "probe"):
            out[base] = {k: v["accuracy"] for k, v in run["baselines"][base].items() if k in SPLITS and v}
    fractions = sorted({r["axes"]["rl_fraction"] for r in runs.values()})
    for fraction in fractions:
        group = [r for r in runs.values() if r["axes"]["rl_fraction"] == fraction]
        group.sort(key=lambda r: r["axes"]["seed"])
        final = [r["stages"]["grpo" if "grpo" in r["stages"] else "sft"] for r in group]
        entry: dict = {"seeds": [r["axes"]["seed"] for r in group],
                       "final_accuracy": {k: mean(s[k]["accuracy"] for s in final) for k in SPLITS},
                       "seconds": mean(sum(s["seconds"] for s in r["stages"].values()) for r in group)}
        if all("grpo" in r["stages"] for r in group):
            entry["grpo_vs_own_sft"] = stage_pairs(study, "sft", "grpo", where={"rl_fraction": fraction})
        out["by_fraction"][str(fraction)] = entry
    out["vs_sft_alone"] = axis_pairs(study, "rl_fraction")  # each run's last stage against rl_fraction 0's
    return out


def main(study: str) -> None:
    summary = summarize(study)
    name = os.path.basename(os.path.normpath(study))
    with open(os.path.join(HERE, f"{name}.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    print("majority", summary["majority"], "probe", summary["probe"])
    for run, r in summary["runs"].items():
        for stage in ("sft", "grpo"):
            if stage in r:
                print(run, stage, {k: round(v, 3) for k, v in r[stage]["accuracy"].items()}, "n", r[stage]["n"],
                      f"{r[stage]['seconds']} s", f"steps {r[stage]['steps']}")
        if r["dynamic_sampling"]:
            print(run, "dynamic sampling", r["dynamic_sampling"], "zero-advantage steps", r["zero_advantage_steps"])
        if r["rollout_rewards"]:
            print(run, "rollouts (first / mean / last logged):",
                  {k: f"{v['first']:.2f} / {v['mean']:.2f} / {v['last']:.2f}" for k, v in r["rollout_rewards"].items()})
    for fraction, e in summary["by_fraction"].items():
        print(f"rl_fraction {fraction}: final", {k: round(v, 3) for k, v in e["final_accuracy"].items()},
              f"{e['seconds']:.0f} s a run")
        for split, c in e.get("grpo_vs_own_sft", {}).items():
            print(f"  GRPO vs its SFT, {split}: {format_difference(c)}")
    for c in summary["vs_sft_alone"]:
        print(f"rl_fraction {c['b']} vs {c['a']}, {c['split']}: {format_difference(c)}")


if __name__ == "__main__":
    main(sys.argv[1])
