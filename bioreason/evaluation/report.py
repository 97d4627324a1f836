"""`report.md` for a pipeline run: tables of validation / ID / OOD scores per stage with their 95% intervals, the
baselines (majority class, a probe on the frozen encoder) as rows, the model's reliance on its input, each stage paired
with the one before it on the same records, and the rate at which each label is predicted; PNG plots (per-stage bars
with interval error bars, and the every-N-steps validation curve when one was recorded) with the baselines as lines.
`stage_tables` is shared with the model card, so the two never disagree."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bioreason.evaluation.baselines import draw_baselines  # noqa: E402
from bioreason.evaluation.intervals import format_difference, format_score  # noqa: E402

SPLIT_NAMES = {"validation": "validation", "id": "ID", "ood": "OOD"}


def _bars(ax, stages: list[dict], key: str, offset: float, width: float, label: str) -> None:
    values = [s.get(key, {}).get("accuracy", 0) for s in stages]
    errors = [[max(0.0, v - s.get(key, {}).get("accuracy_lo", v)) for v, s in zip(values, stages, strict=True)],
              [max(0.0, s.get(key, {}).get("accuracy_hi", v) - v) for v, s in zip(values, stages, strict=True)]]
    ax.bar([i + offset for i in range(len(stages))], values, width, yerr=errors, capsize=3, label=label)


def write_report(out: str, metrics: dict) -> list[str]:
    stages = metrics["stages"]
    names = [s["name"] for s in stages]
    plots = []
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    width = 0.27
    for k, (key, label) in enumerate((("validation", "validation"), ("id", "ID (id_test)"), ("ood", "OOD (ood_test)"))):
        _bars(ax, stages, key, (k - 1) * width, width, label)
    ax.set_xticks(list(range(len(stages))), names)
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Accuracy after each stage")
    draw_baselines(ax, metrics.get("baselines"))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "stages.png"), dpi=120)
    plt.close(fig)
    plots.append("stages.png")
    if metrics.get("curve"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        points = metrics["curve"]
        for key in ("validation", "id", "ood"):
            if any("accuracy" in c.get(key, {}) for c in points):
                acc = [c.get(key, {}).get("accuracy", float("nan")) for c in points]
                lo = [c.get(key, {}).get("accuracy_lo", a) for c, a in zip(points, acc, strict=True)]
                hi = [c.get(key, {}).get("accuracy_hi", a) for c, a in zip(points, acc, strict=True)]
                ax.errorbar(range(len(points)), acc, yerr=[[max(0.0, a - b) for a, b in zip(acc, lo, strict=True)],
                                                          [max(0.0, b - a) for a, b in zip(acc, hi, strict=True)]],
                            marker="o", capsize=3, label=SPLIT_NAMES[key])
        ax.set_xticks(range(len(points)), [f"{c['stage']}:{c['step']}" for c in points], rotation=45)
        ax.set_ylabel("accuracy (95% interval)")
        draw_baselines(ax, metrics.get("baselines"))
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "curve.png"), dpi=120)
        plt.close(fig)
        plots.append("curve.png")
    budget = metrics.get("budget", {})
    text = (
        "# Pipeline report\n\n"
        + ("| budget | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in budget.items()) + "\n"
           if budget else "")
        + stage_tables(metrics)
        + "\n".join(f"![{p}]({p})" for p in plots)
        + "\n"
    )
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    return plots


def dynamic_places(record: dict) -> str:
    """What dynamic sampling did with the batch places the draw left without a group with advantage. Runs before
    the places were filled by repeats recorded `unfilled_groups` (places given to groups without advantage)."""
    if "unfilled_groups" in record:
        return f"{record['unfilled_groups']} batch places left to groups without"
    return (f"{record['repeated_groups']} batch places filled by repeating a group with advantage, "
            f"{record['skipped_steps']} steps skipped (no group with advantage in the draw)")


def stage_tables(metrics: dict) -> str:
    """Markdown: scores with intervals (and the baselines), reliance, paired stage-vs-previous differences and
    prediction rates, each table with the record counts it rests on."""
    stages = metrics["stages"]
    baselines = metrics.get("baselines", {})
    counts = ", ".join(f"{SPLIT_NAMES[k]} n={stages[0].get(k, {}).get('n', 0)}" for k in SPLIT_NAMES) if stages else ""
    rows = [f"| {s['name']} | {s.get('steps', '')} | {s.get('seconds', '')} | "
            + " | ".join(format_score(s.get(k, {}), m) for k in SPLIT_NAMES for m in ("accuracy", "macro_f1")) + " |"
            for s in stages]
    rows += [f"| *{name} baseline* | | | "
             + " | ".join(format_score(b.get(k, {}), m) for k in SPLIT_NAMES for m in ("accuracy", "macro_f1")) + " |"
             for name, b in baselines.items()]
    validation_only = metrics.get("scored_splits") == ["validation"]
    if validation_only:
        counts = f"validation n={stages[0].get('validation', {}).get('n', 0)}" if stages else ""
    text = (f"Scores with 95% intervals (accuracy: Wilson; macro-F1: bootstrap over records); {counts}. Configs and "
            "checkpoints are chosen on validation; the test splits are for the record."
            + (" **Scored on validation only** (`score_test_splits: false`, a run that chooses a config): the "
               "test splits were not read." if validation_only else "") + "\n\n"
            "| stage | steps | seconds | validation accuracy | validation macro-F1 | ID accuracy | ID macro-F1 | "
            "OOD accuracy | OOD macro-F1 |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n")
    rl_notes = [f"- {s['name']}: {s['zero_advantage_steps']} of {s.get('steps')} steps had no group with a reward "
                "spread (no advantage, no gradient)"
                + (f"; stopped early: {s['stopped_early']}" if s.get("stopped_early") else "")
                + (f"; dynamic sampling: {s['dynamic_sampling']['groups_with_advantage']} of "
                   f"{s['dynamic_sampling']['groups_generated']} groups drawn had advantage, "
                   + dynamic_places(s["dynamic_sampling"])
                   if s.get("dynamic_sampling") else "")
                for s in stages if "zero_advantage_steps" in s]
    if rl_notes:
        text += "\n".join(rl_notes) + "\n\n"
    if not validation_only:  # reliance is measured on the test splits
        reliance = [f"| {s['name']} | " + " | ".join(format_score(s.get(k, {}), m) for k in ("id", "ood")
                                                     for m in ("reliance", "reliance_cross_label")) + " |"
                    for s in stages]
        text += ("Reliance: accuracy minus accuracy with each record's input swapped for another record's (near 0: "
                 "the model ignores its input). Cross-label: the donor always has another label, so a model that "
                 "reads its input fully scores about its accuracy. Intervals: bootstrap over records.\n\n"
                 "| stage | ID reliance | ID cross-label | OOD reliance | OOD cross-label |\n|---|---|---|---|---|\n"
                 + "\n".join(reliance) + "\n\n")
    paired = [f"| {s['name']} vs {s['vs_previous'][next(iter(s['vs_previous']))]['stage']} | "
              + " | ".join(format_difference(s["vs_previous"][k]) if k in s["vs_previous"] else "-"
                           for k in SPLIT_NAMES) + " |"
              for s in stages if s.get("vs_previous")]
    if paired:
        text += ("Each stage against the one before it, on the same records: the accuracy difference with its paired "
                 "bootstrap 95% interval and the exact McNemar p-value.\n\n"
                 "| comparison | validation | ID | OOD |\n|---|---|---|---|\n" + "\n".join(paired) + "\n\n")
    rates = [f"| {s['name']} | " + " | ".join(
        ", ".join(f"{label} {rate:.2f}" for label, rate in s.get(k, {}).get("prediction_rate", {}).items()) or "-"
        for k in SPLIT_NAMES) + " |" for s in stages]
    text += ("How often each label is predicted (a collapse to one answer shows here).\n\n"
             "| stage | validation | ID | OOD |\n|---|---|---|---|\n" + "\n".join(rates) + "\n\n")
    return text
