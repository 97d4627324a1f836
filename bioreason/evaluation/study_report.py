"""`bioreason study report DIR`: Markdown + PNG plots from a harvested study table (`DIR/results.csv`).

Plots: ID vs OOD scatter with the Pareto front; accuracy against SFT budget (after the SFT stage); accuracy during SFT
(the runs' periodic evaluations, `curve.csv`, against examples seen); the budget-split
curve (final accuracy against RL's share of the training examples); a heatmap of final OOD accuracy over
(SFT LoRA rank, RL LoRA rank) pairs. Plots whose axes did not vary in the study are skipped and said so. Every accuracy
plot carries the majority-class and probe baselines (the mean over runs of the `majority_*` / `probe_*` columns) as
lines; the report counts the runs that end at the majority class, ranks runs on validation, and states RL's effect as a
paired difference on the same records with its interval (`stage_pairs`), and along SFT each test split at the last
periodic point against the point chosen on validation (`curve_pairs`).
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bioreason.evaluation.baselines import draw_baselines  # noqa: E402


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of points not dominated in both coordinates (higher is better), sorted by the first coordinate."""
    keep = [i for i, p in enumerate(points) if not any((q >= p).all() and (q > p).any() for q in points)]
    return np.array(sorted(keep, key=lambda i: points[i, 0]), dtype=int)


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    rows = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    rows += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(rows)


def _save(fig, out: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=120)
    plt.close(fig)
    return name


SPLIT_LABELS = {"validation": "validation", "id": "ID", "ood": "OOD"}


def scored_splits(table: pd.DataFrame, prefix: str = "") -> list[str]:
    """The held-out splits the runs were scored on (`{prefix}{split}_accuracy` columns): validation, ID, OOD, or
    validation alone where the runs chose a config (`score_test_splits: false`)."""
    return [split for split in SPLIT_LABELS if f"{prefix}{split}_accuracy" in table
            and table[f"{prefix}{split}_accuracy"].notna().any()]


def baselines_of(table: pd.DataFrame) -> dict:
    """`{"majority": {"id": {"accuracy"}, "ood": ...}, "probe": ...}` averaged over the runs that recorded them."""
    out: dict = {}
    for name in ("majority", "probe", "input_probe"):
        for split in SPLIT_LABELS:
            column = f"{name}_{split}_accuracy"
            if column in table and table[column].notna().any():
                out.setdefault(name, {})[split] = {"accuracy": float(table[column].mean())}
    return out


def _line_plot(out: str, name: str, lines: list, xlabel: str, ylabel: str, baselines: dict | None = None) -> str:
    """One figure of `(series, style, label)` lines against their index, with the baselines; returns the saved path."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for series, style, label in lines:
        ax.plot(series.index, series, style, label=label)
    draw_baselines(ax, baselines)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return _save(fig, out, name)


RECORD_KEYS = ("dataset", "data_root", "task_seed", "max_eval_examples")
"""The run settings that decide which records a run is scored on: runs that agree on them were scored on the same
records in the same order."""


def _records_key(run_dir: str) -> tuple | None:
    """The run's `RECORD_KEYS` values from its `config.yaml`, None where the run has no config."""
    import yaml

    path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh) or {}
    return tuple(config.get(key) for key in RECORD_KEYS)


def stage_pairs(out: str, before: str, after: str, where: dict | None = None) -> dict[str, dict]:
    """`{split: paired comparison}` of stage `after` against stage `before` over every finished run that has both,
    on the same records (the runs' per-record `correct` vectors in their metrics.json); with `where`, only the runs
    whose grid axes have those values (one cell of a grid, e.g. `{"rl_fraction": 0.5}`).

    Runs scored on the same records (equal `RECORD_KEYS` in their configs, as the seeds of one config are) are
    stacked as seeds, so the interval resamples records with each record's difference averaged over the runs: a
    record is the unit, and three seeds of one record are not three records. Otherwise each run's records are
    concatenated and the interval resamples (run, record) pairs. McNemar counts every (run, record) pair either way.
    Runs that predate the per-record vectors are skipped."""
    from bioreason.evaluation.intervals import paired_comparison

    a: dict[str, list[list[int]]] = {}
    b: dict[str, list[list[int]]] = {}
    keys: dict[str, set] = {}
    cells: dict[str, set[tuple]] = {}  # the grid cells (axes but the seed) stacked in each split
    for axes, stages, key in finished_runs(out):
        if before not in stages or after not in stages or any(axes.get(k) != v for k, v in (where or {}).items()):
            continue
        for split, correct in stages[after].get("correct", {}).items():
            previous = stages[before].get("correct", {}).get(split)
            if previous is not None and len(previous) == len(correct):
                a.setdefault(split, []).append(list(previous))
                b.setdefault(split, []).append(list(correct))
                keys.setdefault(split, set()).add((key, len(correct)))
                cells.setdefault(split, set()).add(tuple(sorted((k, repr(v)) for k, v in axes.items() if k != "seed")))
    pairs = {}
    for split in a:
        same_records = len(keys[split]) == 1 and next(iter(keys[split]))[0] is not None
        if same_records:
            pairs[split] = paired_comparison(a[split], b[split])
        else:
            pairs[split] = paired_comparison([v for run in a[split] for v in run], [v for run in b[split] for v in run])
        pairs[split]["stacked_as_seeds"] = same_records
        if same_records and len(cells[split]) > 1:
            pairs[split]["stacked"] = "runs"  # several grid cells pooled: their rows are runs, not seeds of one config
    return {split: c for split, c in pairs.items() if c["n"]}


def _id_vs_ood(out: str, table: pd.DataFrame, baselines: dict) -> str:
    """Final ID vs OOD accuracy of every run, the Pareto front, and the baselines as points."""
    pts = table[["id_accuracy", "ood_accuracy"]].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(pts[:, 0], pts[:, 1], alpha=0.7, label="runs (final stage)")
    front = pareto_front(pts)
    ax.plot(pts[front, 0], pts[front, 1], "r-o", label="Pareto front")
    for name, marker in (("majority", "X"), ("probe", "*"), ("input_probe", "P")):
        if {"id", "ood"} <= set(baselines.get(name, {})):
            ax.scatter([baselines[name]["id"]["accuracy"]], [baselines[name]["ood"]["accuracy"]], marker=marker,
                       s=120, color="k", label=f"{name} baseline")
    ax.set_xlabel("ID accuracy")
    ax.set_ylabel("OOD accuracy")
    ax.legend(fontsize=7)
    ax.set_title("ID vs OOD")
    return _save(fig, out, "id_vs_ood.png")


def finished_runs(out: str) -> list[tuple[dict, dict, tuple | None]]:
    """(axes, {stage name: stage record}, records key) of every finished run of a study, in name order; axes `{}`
    where a run has no axes.json. Public, like `finished_metrics`, for the summaries in `docs/measurements/`."""
    return [(axes, {s["name"]: s for s in metrics["stages"]}, key) for _, axes, metrics, key in finished_metrics(out)]


def finished_metrics(out: str) -> list[tuple[str, dict, dict, tuple | None]]:
    """(run folder name, axes, metrics.json, records key) of every finished run of a study, in name order: what a
    study's own summaries (`docs/measurements/*/summarize.py`) read, so none of them walks the run folders again."""
    import json

    runs = []
    runs_dir = os.path.join(out, "runs")
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        run_dir = os.path.join(runs_dir, name)
        metrics = os.path.join(run_dir, "metrics.json")
        if not os.path.exists(os.path.join(run_dir, "DONE")) or not os.path.exists(metrics):
            continue
        with open(metrics, encoding="utf-8") as fh:
            loaded = json.load(fh)
        axes = {}
        if os.path.exists(os.path.join(run_dir, "axes.json")):
            with open(os.path.join(run_dir, "axes.json"), encoding="utf-8") as fh:
                axes = json.load(fh)
        runs.append((name, axes, loaded, _records_key(run_dir)))
    return runs


def _ordered(values: list) -> list:
    unique = []
    for v in values:
        if v not in unique:
            unique.append(v)
    try:
        return sorted(unique)
    except TypeError:  # mixed kinds: the grid's order of appearance
        return unique


def axis_pairs(out: str, axis: str, stage: str | None = None, seed_axis: str = "seed") -> list[dict]:
    """Each value of a grid `axis` against its first (sorted) value, as paired comparisons on the same records: runs
    that differ only in `axis` and the seed are matched by seed, and their per-record vectors of `stage` (default:
    each run's last stage) are stacked as seeds (`paired_comparison`), separately for each setting of the other axes.
    Returns one entry per (value, other axes, split): `{"axis", "a", "b", "given", "split", **comparison}`; runs
    scored on other records (a different `RECORD_KEYS`) are not paired."""
    from bioreason.evaluation.intervals import paired_comparison

    runs = [r for r in finished_runs(out) if axis in r[0]]
    values = _ordered([r[0][axis] for r in runs])
    if len(values) < 2:
        return []
    cells: dict[tuple, dict] = {}  # (other axes, value) -> {seed: (vectors, records key)}
    for axes, stages, key in runs:
        name = stage if stage is not None else [n for n in stages if n != "base"][-1]
        if name not in stages or "correct" not in stages[name]:
            continue
        others = tuple(sorted((k, repr(v)) for k, v in axes.items() if k not in (axis, seed_axis)))
        cells.setdefault((others, repr(axes[axis])), {})[axes.get(seed_axis)] = (stages[name]["correct"], key)
    found = []
    for (others, value), by_seed in cells.items():
        if value == repr(values[0]):
            continue
        base = cells.get((others, repr(values[0])), {})
        seeds = [s for s in by_seed if s in base and by_seed[s][1] == base[s][1]]
        for split in ("validation", "id", "ood"):
            pairs = [(base[s][0].get(split), by_seed[s][0].get(split)) for s in seeds]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None and len(a) == len(b)]
            if not pairs or len({len(a) for a, _ in pairs}) > 1:
                continue
            comparison = paired_comparison([a for a, _ in pairs], [b for _, b in pairs])
            found.append({"axis": axis, "a": values[0], "b": next(v for v in values if repr(v) == value),
                          "given": dict(others), "split": split, **comparison})
    return found


def cell_pairs(out: str, a: dict, b: dict, stage: str | None = None, seed_axis: str = "seed") -> list[dict]:
    """Grid cell `b` against cell `a` (each a setting of some axes, e.g. `{"sft.lora_r": 256, "grpo.lora_r": 16}`
    against `{"sft.lora_r": 16, "grpo.lora_r": 4}`), where more than one axis differs and `axis_pairs` does not
    reach: the runs of each cell matched by seed, their per-record vectors of `stage` (default: each run's last
    stage) stacked as seeds on the same records. Returns one `{"a", "b", "split", "seeds_matched", **comparison}`
    per split both cells scored; seeds scored on other records are not matched."""
    from bioreason.evaluation.intervals import paired_comparison

    def cell(where: dict) -> dict:
        found = {}
        for axes, stages, key in finished_runs(out):
            if any(axes.get(k) != v for k, v in where.items()):
                continue
            name = stage if stage is not None else [n for n in stages if n != "base"][-1]
            if name in stages and "correct" in stages[name]:
                if axes.get(seed_axis) in found:
                    raise ValueError(f"{out}: cell {where} holds more than one run of seed {axes.get(seed_axis)}; "
                                     "name every axis that differs between them")
                found[axes.get(seed_axis)] = (stages[name]["correct"], key)
        return found

    cell_a, cell_b = cell(a), cell(b)
    seeds = sorted((s for s in cell_a if s in cell_b and cell_a[s][1] == cell_b[s][1]), key=repr)
    pairs = []
    for split in ("validation", "id", "ood"):
        vectors = [(cell_a[s][0].get(split), cell_b[s][0].get(split)) for s in seeds]
        if not vectors or any(x is None or y is None or len(x) != len(y) for x, y in vectors) \
                or len({len(x) for x, _ in vectors}) > 1:
            continue
        pairs.append({"a": a, "b": b, "split": split, "seeds_matched": seeds,
                      **paired_comparison([x for x, _ in vectors], [y for _, y in vectors])})
    return pairs


def curve_pairs(out: str, stage: str = "sft", choose: str = "validation", seed_axis: str = "seed") -> list[dict]:
    """Where along a stage its test splits stood best, read without looking at them (issue 27's "OOD peaks early,
    then declines"): for each setting of the grid axes but the seed, the runs' periodic points of `stage`
    (`eval_every_steps`, with `curve_splits`), stacked as seeds on the same records. The step is chosen on the mean
    `choose` accuracy over the seeds (the earliest of the best), one step for every seed; each other split is then
    compared at the last step against the chosen one, paired on the same records (`paired_comparison`, a = the
    chosen step, b = the last: a negative difference is what training past the chosen step lost).

    Returns one entry per (setting, split): `{"given", "split", "steps", "accuracy" (the mean curve), "chosen_step",
    "last_step", "peak_step" (the split's own best: read on the split itself, so shown, never paired), **comparison}`.
    Runs whose points keep no per-record vectors (before they were kept) or miss a step the others have are left
    out of their setting."""
    from bioreason.evaluation.intervals import paired_comparison

    cells: dict[tuple, list[tuple[dict, tuple | None]]] = {}
    for _, axes, metrics, key in finished_metrics(out):
        points = {p["step"]: p for p in metrics.get("curve") or [] if p.get("stage") == stage}
        if len(points) < 2:
            continue
        others = tuple(sorted((k, repr(v)) for k, v in axes.items() if k != seed_axis))
        cells.setdefault(others, []).append((points, key))
    found = []
    for others, runs in cells.items():
        if len({key for _, key in runs}) != 1 or next(iter(runs))[1] is None:
            continue  # not scored on the same records: the points cannot be stacked as seeds
        steps = sorted(set.intersection(*(set(points) for points, _ in runs)))

        def vectors(split: str, step: int, runs=runs) -> list | None:
            found_vectors = [points[step].get(split, {}).get("correct") for points, _ in runs]
            return None if any(v is None for v in found_vectors) else found_vectors

        if len(steps) < 2 or any(vectors(choose, step) is None for step in steps):
            continue
        chosen = max(steps, key=lambda step: (float(np.mean(vectors(choose, step))), -step))
        splits = [k for k in ("validation", "id", "ood") if k != choose
                  and all(vectors(k, step) is not None for step in steps)]
        for split in splits:
            curve = [float(np.mean(vectors(split, step))) for step in steps]
            found.append({"given": {k: v for k, v in others}, "split": split, "steps": steps, "accuracy": curve,
                          "chosen_step": chosen, "last_step": steps[-1],
                          "peak_step": steps[int(np.argmax(curve))],
                          **paired_comparison(vectors(split, chosen), vectors(split, steps[-1]))})
    return found


COST_ORDER = ("sft_examples", "sft_epochs", "rl_examples", "total_examples", "cpt_examples", "cpt", "sft.lora_r",
              "grpo.lora_r", "lora_r")
"""Grid axes that make a config dearer as their value grows, most important first: `choose_config` breaks ties
towards the config that is cheaper on them (fewer SFT examples, then no CPT, then smaller LoRA ranks)."""


def _order_key(value) -> tuple:
    """Numbers by value, everything else by its repr after them: 4 before 16, where repr would put "16" first."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return (1, 0, repr(value))
    return (0, value, "")


def choose_config(out: str, split: str = "validation", seed_axis: str = "seed") -> dict | None:
    """The config a choosing study picks (docs/EVALUATION.md, "The rule that chooses"): the cheapest config (by the
    grid axes in `COST_ORDER`, then the others in sorted order) whose `split` accuracy is not below the best
    config's by a paired difference whose 95% interval lies wholly below 0. A config is a setting of every grid axis
    but the seed; its seeds' per-record vectors (last stage) are stacked on the same records, and only the seeds every
    config has are compared. Returns `{"best", "chosen", "configs": [{"config", "accuracy", "vs_best"}, ...]}` in
    cost order, or None where fewer than two configs have `split` scored."""
    from bioreason.evaluation.intervals import paired_comparison

    cells: dict[tuple, dict] = {}  # config -> {seed: correct vector}
    for axes, stages, _ in finished_runs(out):
        name = [n for n in stages if n != "base"][-1]
        correct = stages[name].get("correct", {}).get(split)
        if correct is None:
            continue
        config = tuple(sorted((k, v) for k, v in axes.items() if k != seed_axis))
        cells.setdefault(config, {})[axes.get(seed_axis)] = list(correct)
    if len(cells) < 2:
        return None
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in cells.values())), key=repr)
    if not seeds:
        return None

    def cost(config: tuple) -> tuple:
        values = dict(config)
        return (tuple(values[a] for a in COST_ORDER if a in values),
                tuple(_order_key(values[a]) for a in sorted(values) if a not in COST_ORDER))

    stacked = {config: [by_seed[s] for s in seeds] for config, by_seed in cells.items()}
    accuracy = {config: float(np.mean(vectors)) for config, vectors in stacked.items()}
    best = min(stacked, key=lambda c: (-accuracy[c], cost(c)))  # equal accuracy: the cheaper config is the best
    rows = []
    for config in sorted(stacked, key=cost):
        vs_best = paired_comparison(stacked[best], stacked[config]) if config != best else None
        rows.append({"config": dict(config), "accuracy": accuracy[config], "vs_best": vs_best})
    chosen = next(r["config"] for r in rows if r["vs_best"] is None or r["vs_best"]["difference_hi"] >= 0)
    return {"split": split, "seeds": seeds, "best": dict(best), "chosen": chosen, "configs": rows}


def choice_text(out: str) -> str:
    """The report's paragraph on `choose_config`'s pick: every config's validation accuracy and its paired difference
    from the best; empty where the study has fewer than two configs scored on validation."""
    from bioreason.evaluation.intervals import format_difference

    choice = choose_config(out)
    if choice is None:
        return ""

    def name(config: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in config.items()) or "(no axis)"

    lines = [f"- {name(r['config'])}: validation {r['accuracy']:.3f}"
             + (f"; minus the best {format_difference(r['vs_best'])}" if r["vs_best"] else " (the best)")
             for r in choice["configs"]]
    return (f"Chosen on validation by the rule of docs/EVALUATION.md (the cheapest config whose paired difference "
            f"from the best does not lie wholly below 0; seeds {choice['seeds']}): **{name(choice['chosen'])}**."
            "\n\n" + "\n".join(lines) + "\n\n")


def curve_text(out: str) -> str:
    """The report's paragraph on `curve_pairs`: along SFT, each test split at the last step against the step chosen
    on validation; empty where no run kept per-record vectors at its periodic points."""
    from bioreason.evaluation.intervals import format_difference

    lines = []
    for c in curve_pairs(out):
        given = ", ".join(f"{k}={v}" for k, v in c["given"].items())
        lines.append(f"- {SPLIT_LABELS[c['split']]}" + (f" ({given})" if given else "")
                     + f": step {c['chosen_step']} {c['accuracy_a']:.3f}, last step {c['last_step']} "
                     f"{c['accuracy_b']:.3f}, last minus chosen {format_difference(c)}; the split's own best "
                     f"step {c['peak_step']} (read on the split itself)")
    if not lines:
        return ""
    return ("Along SFT (periodic points, seeds stacked on the same records): the step chosen on validation against "
            "the last step:\n\n" + "\n".join(lines) + "\n\n")


def write_study_report(out: str) -> str:
    table = pd.read_csv(os.path.join(out, "results.csv"))
    if table.empty:
        raise ValueError(f"{out}: no finished runs to report")
    plots, notes = [], []
    baselines = baselines_of(table)

    splits = scored_splits(table)
    if {"id", "ood"} <= set(splits):
        plots.append(_id_vs_ood(out, table, baselines))
    else:
        notes.append("Scored on validation only (`score_test_splits: false`): no ID vs OOD plot; the chosen config "
                     "is scored on the test splits once, in a run of its own.")

    # accuracy against SFT budget, after the SFT stage
    sft_splits = [k for k in scored_splits(table, "sft_") if k != "validation" or "id" not in splits]
    if "sft_examples" in table and table["sft_examples"].nunique() > 1 and sft_splits:
        budget = table["sft_examples"] * table.get("sft_epochs", 1)
        grouped = table.assign(budget=budget).groupby("budget")[[f"sft_{k}_accuracy" for k in sft_splits]].mean()
        lines = [(grouped[f"sft_{k}_accuracy"], "o-", f"{SPLIT_LABELS[k]} after SFT") for k in sft_splits]
        if "grpo_ood_accuracy" in table:
            after = table.assign(budget=budget).groupby("budget")["grpo_ood_accuracy"].mean()
            lines.append((after, "s--", "OOD after SFT + RL"))
        plots.append(_line_plot(out, "ood_vs_sft_budget.png", lines, "SFT budget (examples x epochs)",
                                "accuracy (mean over runs)", baselines))
    else:
        notes.append("SFT budget did not vary: no budget plot.")

    # accuracy during SFT, from the runs' periodic evaluations (`eval_every_steps`)
    curve_path = os.path.join(out, "curve.csv")
    sft_curve = pd.read_csv(curve_path) if os.path.exists(curve_path) else None  # harvest writes its header always
    if sft_curve is not None:
        sft_curve = sft_curve[sft_curve["stage"] == "sft"]
    if sft_curve is not None and sft_curve["examples"].nunique() > 1:
        # the curve scores validation (where checkpoints are chosen); runs from before the split have ID / OOD
        names = {"validation_accuracy": "validation", "id_accuracy": "ID", "ood_accuracy": "OOD"}
        present = [c for c in names if c in sft_curve and sft_curve[c].notna().any()]
        grouped = sft_curve.groupby("examples")[present].mean()
        lines = [(grouped[c], "o-", names[c]) for c in present]
        plots.append(_line_plot(out, "accuracy_during_sft.png", lines, "SFT examples seen",
                                "accuracy (mean over runs evaluated there)", baselines))
    else:
        notes.append("No periodic evaluations during SFT (`eval_every_steps`): no curve within runs.")

    # budget split: RL's share of the examples
    if {"sft_examples", "rl_examples"} <= set(table) and (table["rl_examples"] > 0).any():
        share = table["rl_examples"] / (table["sft_examples"] + table["rl_examples"])
        shown = [k for k in splits if k != "validation"] or splits
        grouped = table.assign(share=share.round(3)).groupby("share")[[f"{k}_accuracy" for k in shown]].mean()
        if len(grouped) > 1:
            lines = [(grouped[f"{k}_accuracy"], "o-", SPLIT_LABELS[k]) for k in shown]
            plots.append(_line_plot(out, "budget_split.png", lines, "RL share of training examples",
                                    "final accuracy (mean over runs)", baselines))
        else:
            notes.append("Only one SFT:RL split: no budget-split curve.")

    # rank pairs
    ranks = {"sft_lora_r", "grpo_lora_r"} <= set(table)
    if ranks and table["sft_lora_r"].nunique() * table["grpo_lora_r"].nunique() > 1:
        shown = "ood" if "ood" in splits else "validation"
        heat = table.pivot_table(index="sft_lora_r", columns="grpo_lora_r", values=f"{shown}_accuracy",
                                 aggfunc="mean")
        fig, ax = plt.subplots(figsize=(5, 4))
        im = ax.imshow(heat.to_numpy(), cmap="viridis", origin="lower")
        ax.set_xticks(range(len(heat.columns)), heat.columns)
        ax.set_yticks(range(len(heat.index)), heat.index)
        ax.set_xlabel("RL LoRA rank")
        ax.set_ylabel("SFT LoRA rank")
        for (i, j), v in np.ndenumerate(heat.to_numpy()):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w")
        bar = fig.colorbar(im, ax=ax, label=f"final {SPLIT_LABELS[shown]} accuracy")
        for name, style in (("majority", ":"), ("probe", "--"), ("input_probe", "-.")):  # marks on the colour bar
            if shown in baselines.get(name, {}):
                bar.ax.axhline(baselines[name][shown]["accuracy"], color="k", linestyle=style, linewidth=2)
        ax.set_title(f"{SPLIT_LABELS[shown]}; colour bar: majority (dotted), probe (dashed), input probe "
                     "(dash-dot)", fontsize=8)
        plots.append(_save(fig, out, "rank_heatmap.png"))
    else:
        notes.append("LoRA ranks did not vary: no rank heatmap.")

    rl_effect = ""
    paired = stage_pairs(out, "sft", "grpo")
    if paired:
        from bioreason.evaluation.intervals import format_difference

        rl_effect = ("RL after SFT, paired on the same records over the runs (accuracy difference, 95% interval, "
                     "McNemar p): " + "; ".join(f"{split} {format_difference(c)}" for split, c in paired.items())
                     + ".\n\n")
    elif {"sft_ood_accuracy", "grpo_ood_accuracy"} <= set(table):
        diff = (table["grpo_ood_accuracy"] - table["sft_ood_accuracy"]).dropna()
        diff_id = (table["grpo_id_accuracy"] - table["sft_id_accuracy"]).dropna()
        rl_effect = (f"RL after SFT changed OOD accuracy by {diff.mean():+.3f} on average (better in {(diff > 0).sum()}"
                     f", worse in {(diff < 0).sum()}, same in {(diff == 0).sum()} of {len(diff)} runs) and ID "
                     f"accuracy by {diff_id.mean():+.3f}.\n\n")
    axis_effects = []
    axis_names = [c[len("axis_"):] for c in table.columns if c.startswith("axis_") and c != "axis_seed"]
    for axis in axis_names:
        if table[f"axis_{axis}"].nunique() < 2:
            continue
        from bioreason.evaluation.intervals import format_difference

        by_setting: dict = {}
        for c in axis_pairs(out, axis):
            given = ", ".join(f"{k}={v}" for k, v in c["given"].items())
            by_setting.setdefault((repr(c["b"]), given, c["a"], c["b"]), []).append(
                f"{SPLIT_LABELS[c['split']]} {format_difference(c)}")
        axis_effects += [f"- `{axis}` {b} vs {a}" + (f" ({given})" if given else "") + ": " + "; ".join(parts)
                         for (_, given, a, b), parts in by_setting.items()]
    if axis_effects:
        rl_effect += ("Each grid axis, a value against the first, paired on the same records over the seeds (last "
                      "stage; accuracy difference, 95% interval, McNemar p):\n\n" + "\n".join(axis_effects) + "\n\n")
    rl_effect += choice_text(out) + curve_text(out)
    at_majority = ""
    judged = "id" if "id" in splits else "validation"
    if f"majority_{judged}_accuracy" in table and f"sft_{judged}_accuracy" in table:
        # a run "ends SFT at the majority class" when its SFT accuracy is no better than always answering the prior
        stuck = int((table[f"sft_{judged}_accuracy"] <= table[f"majority_{judged}_accuracy"] + 1e-9).sum())
        at_majority = (f"{stuck} of {len(table)} runs end SFT at or below the majority class "
                       f"({SPLIT_LABELS[judged]}).\n\n")
    if baselines:
        # each split the runs scored: validation alone where the test splits stayed unread
        shown = [(name, [k for k in splits if k in b]) for name, b in baselines.items()]
        at_majority += "Baselines (mean over runs): " + "; ".join(
            f"{name} " + " / ".join(f"{SPLIT_LABELS[k]} {baselines[name][k]['accuracy']:.3f}" for k in keys)
            for name, keys in shown if keys) + ".\n\n"
    # the best runs are chosen on validation (choosing on a test split would tune to it); the test figures are shown
    rank = "validation_accuracy" if "validation_accuracy" in table else "ood_accuracy"
    columns = [c for c in ("run", "sft_examples", "rl_examples", "sft_lora_r", "grpo_lora_r", "validation_accuracy",
                           "id_accuracy", "id_accuracy_lo", "id_accuracy_hi", "ood_accuracy", "ood_accuracy_lo",
                           "ood_accuracy_hi", "id_reliance", "ood_reliance") if c in table]
    best = table.sort_values(rank, ascending=False)[columns].head(10)
    chosen = ("Top runs by final validation accuracy (the test columns are for the record):" if rank != "ood_accuracy"
              else "Top runs by final OOD accuracy (these runs predate the validation split):")
    text = (f"# Study report\n\n{len(table)} finished runs (`results.csv`, `results.parquet`).\n\n{rl_effect}"
            f"{at_majority}{chosen}\n\n{markdown_table(best)}\n\n"
            + "\n".join(f"![{p}]({p})" for p in plots) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    return os.path.join(out, "report.md")
