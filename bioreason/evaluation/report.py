"""`report.md` for a pipeline run: a table of ID / OOD metrics per stage with the baselines (majority class, a probe on
the frozen encoder) as rows and the model's modality reliance as a column, and PNG plots (per-stage bars, and the
every-N-steps curve when one was recorded) with the baselines drawn as lines."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bioreason.evaluation.baselines import draw_baselines  # noqa: E402


def write_report(out: str, metrics: dict) -> list[str]:
    stages = metrics["stages"]
    names = [s["name"] for s in stages]
    plots = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    x = range(len(stages))
    ax.bar([i - width / 2 for i in x], [s["id"].get("accuracy", 0) for s in stages], width, label="ID (id_test)")
    ax.bar([i + width / 2 for i in x], [s["ood"].get("accuracy", 0) for s in stages], width, label="OOD (ood_test)")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("ID and OOD accuracy after each stage")
    draw_baselines(ax, metrics.get("baselines"))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "stages.png"), dpi=120)
    plt.close(fig)
    plots.append("stages.png")
    if metrics.get("curve"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key, label in (("id", "ID"), ("ood", "OOD")):
            ax.plot(range(len(metrics["curve"])), [c[key]["accuracy"] for c in metrics["curve"]], marker="o",
                    label=label)
        ax.set_xticks(range(len(metrics["curve"])), [f"{c['stage']}:{c['step']}" for c in metrics["curve"]],
                      rotation=45)
        ax.set_ylabel("accuracy")
        draw_baselines(ax, metrics.get("baselines"))
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "curve.png"), dpi=120)
        plt.close(fig)
        plots.append("curve.png")
    rows = [_row(s["name"], s["steps"], s["seconds"], s["id"], s["ood"]) for s in stages]
    rows += [_row(f"*{name} baseline*", "", "", b.get("id", {}), b.get("ood", {}))
             for name, b in metrics.get("baselines", {}).items()]
    budget = metrics.get("budget", {})
    text = (
        "# Pipeline report\n\n"
        + (f"Budget: {budget}\n\n" if budget else "")
        + "Reliance: accuracy minus accuracy with every example's encoder input swapped for another example's "
          "(near 0: the model ignores its encoder). Baselines: the train split's majority label; a logistic regression "
          "on the frozen encoder's mean-pooled features, fit on the train split.\n\n"
        + "| stage | steps | seconds | ID accuracy | ID macro-F1 | ID reliance | OOD accuracy | OOD macro-F1 | "
          "OOD reliance |\n"
        + "|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        + "\n".join(f"![{p}]({p})" for p in plots)
        + "\n"
    )
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    return plots


def _row(name: str, steps, seconds, id_metrics: dict, ood_metrics: dict) -> str:
    def cell(metrics: dict, key: str) -> str:
        return f"{metrics[key]:.3f}" if key in metrics else "-"

    return (f"| {name} | {steps} | {seconds} | {cell(id_metrics, 'accuracy')} | {cell(id_metrics, 'macro_f1')} | "
            f"{cell(id_metrics, 'reliance')} | {cell(ood_metrics, 'accuracy')} | {cell(ood_metrics, 'macro_f1')} | "
            f"{cell(ood_metrics, 'reliance')} |")
