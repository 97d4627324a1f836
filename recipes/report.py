"""`report.md` for a pipeline run: a table of ID / OOD metrics per stage and PNG plots (per-stage bars, and the
every-N-steps curve when one was recorded)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
    ax.legend()
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
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "curve.png"), dpi=120)
        plt.close(fig)
        plots.append("curve.png")
    rows = "\n".join(
        f"| {s['name']} | {s['steps']} | {s['seconds']} | {s['id'].get('accuracy', float('nan')):.3f} | "
        f"{s['id'].get('macro_f1', float('nan')):.3f} | {s['ood'].get('accuracy', float('nan')):.3f} | "
        f"{s['ood'].get('macro_f1', float('nan')):.3f} |"
        for s in stages
    )
    budget = metrics.get("budget", {})
    text = (
        "# Pipeline report\n\n"
        + (f"Budget: {budget}\n\n" if budget else "")
        + "| stage | steps | seconds | ID accuracy | ID macro-F1 | OOD accuracy | OOD macro-F1 |\n"
        + "|---|---|---|---|---|---|---|\n"
        + rows
        + "\n\n"
        + "\n".join(f"![{p}]({p})" for p in plots)
        + "\n"
    )
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    return plots
