"""Studies in the seed paper's design: expand a grid of post-training recipes, run each through the pipeline recipe,
skip what already finished (a killed study resumes), harvest one table, and report.

    bioreason study plan recipes/configs/study/cpu_antibody.yaml
    bioreason study run recipes/configs/study/cpu_antibody.yaml --out docs/study
    bioreason study report docs/study

A study config has `base` (pipeline / model / data fields shared by all runs) and `grid` (axis -> values). Axes are
pipeline fields (`sft_examples`, `rl_examples`, `rl_fraction`, `seed`, ...) or a stage's settings by their TRL /
ModelConfig names (`sft.lora_r`, `grpo.lora_r`, `sft.num_train_epochs`, ...), plus three study axes: `backbone` (the
LLM source), `cpt` (bool: run the CPT stage) and `rl_start` (`warm`: RL after SFT; `cold`: RL from the base model).
Each run lives in `OUT/runs/<name>/` and is finished when its `DONE` marker exists; an unfinished run resumes after
its last finished stage (`bioreason/training/run_state.py`), and runs die with a killed study
(`bioreason.training.faults.die_with_parent`). Executors: `local` (each run in its own process; `jobs` of them at a
time, the most training first, each given an equal share of the CPU cores as its thread count) and `submitit`
(SLURM, or submitit's local executor for testing).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import yaml

STUDY_AXES = {"backbone", "cpt", "rl_start"}


@dataclass
class Run:
    name: str
    axes: dict
    config: dict  # the pipeline config (every key a PipelineArguments / ModelArguments / DataArguments field)


def load_study(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        study = yaml.safe_load(fh)
    if not isinstance(study, dict) or "grid" not in study:
        raise ValueError(f"{path}: a study config needs a `grid` mapping (and usually `base`)")
    for axis, values in study["grid"].items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: grid axis {axis!r} must be a non-empty list")
    return study


def run_config(base: dict, axes: dict) -> dict:
    """The pipeline config of one grid point."""
    config = dict(base)
    stages = list(base.get("stages", ["sft", "grpo"]))
    for axis, value in axes.items():
        if axis == "backbone":
            config["llm"] = value
        elif axis == "cpt":
            stages = (["cpt"] if value else []) + [s for s in stages if s != "cpt"]
        elif axis == "rl_start":
            if value not in ("warm", "cold"):
                raise ValueError(f"rl_start must be 'warm' or 'cold', got {value!r}")
            if value == "cold":
                stages = [s for s in stages if s != "sft"]
        else:
            config[axis] = value
    if config.get("sft_examples") == 0:
        stages = [s for s in stages if s != "sft"]
    if config.get("rl_examples") == 0:
        stages = [s for s in stages if s != "grpo"]
    config["stages"] = stages
    return config


def axis_value_name(value) -> str:
    """A value as a folder name: a list's items joined by `+` (not Python's brackets and quotes), and any character
    a shell or a file system may trip on (`/`, spaces, `:`, quotes...) as `_`."""
    text = "+".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text)


def run_name(axes: dict) -> str:
    parts = [f"{k}-{axis_value_name(v)}" for k, v in sorted(axes.items()) if k != "backbone"]
    if "backbone" in axes:
        parts.insert(0, "bb-" + hashlib.sha1(str(axes["backbone"]).encode()).hexdigest()[:6])
    return "_".join(parts) or "run"


def expand(study: dict) -> list[Run]:
    """The cartesian product of the grid axes, in a stable order; duplicate effective configs are kept once."""
    grid = study["grid"]
    axes_names = list(grid)
    runs, seen = [], set()
    for values in itertools.product(*(grid[a] for a in axes_names)):
        axes = dict(zip(axes_names, values, strict=True))
        config = run_config(study.get("base", {}), axes)
        key = json.dumps(config, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        name = run_name(axes)
        clash = next((run for run in runs if run.name == name), None)
        if clash:
            raise ValueError(f"two runs of the study would share the folder {name!r} ({clash.axes} and {axes}): "
                             "give the grid values that differ in more than punctuation")
        runs.append(Run(name, axes, config))
    return runs


def thread_env(threads: int | None) -> dict:
    """The environment of a run: limited to `threads` intra-op threads (None: as inherited), and told its parent
    (the run dies with a killed study: `bioreason.training.faults.die_with_parent`). Runs side by side also get
    `OMP_WAIT_POLICY=PASSIVE` (unless set): oneDNN's bf16 matmuls open a 2-thread OpenMP team even under
    `OMP_NUM_THREADS=1`, and its idle thread spins at the barrier, on the core the other run needs. Measured on
    pbmc_cell_type's SFT, two runs at once on a 2-core Intel Xeon (AMX-BF16): 45 s a step each with the spin, 2.6 s
    without it (one run alone: 1.7 s; docs/STUDY.md)."""
    env = {**os.environ, "BIOREASON_PARENT_PID": str(os.getpid())}
    if threads is not None:
        value = str(max(1, threads))
        env.update(OMP_NUM_THREADS=value, MKL_NUM_THREADS=value)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def run_one(run_dir: str, threads: int | None = None) -> str:
    """Run one pipeline in its own process (a clean interpreter per run, as on a cluster) and mark it done."""
    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    command = [sys.executable, "-m", "bioreason.recipes.pipeline", "--config", os.path.join(run_dir, "config.yaml")]
    proc = subprocess.run(command, capture_output=True, text=True, env=thread_env(threads))
    with open(os.path.join(run_dir, "log.txt"), "w", encoding="utf-8") as fh:
        fh.write(proc.stdout[-20000:] + "\n" + proc.stderr[-50000:])
    if proc.returncode != 0:
        raise RuntimeError(f"run {run_dir} failed (exit {proc.returncode}); see its log.txt")
    if not os.path.exists(os.path.join(config["output_dir"], "metrics.json")):
        raise RuntimeError(f"run {run_dir} wrote no metrics.json")
    open(os.path.join(run_dir, "DONE"), "w").close()
    return run_dir


def prepare(runs: list[Run], out: str) -> list[str]:
    """Write each run's config; return the run folders still to do."""
    todo = []
    for run in runs:
        run_dir = os.path.join(out, "runs", run.name)
        if os.path.exists(os.path.join(run_dir, "DONE")):
            continue
        os.makedirs(run_dir, exist_ok=True)
        # runs whose settings agree up to a stage share it (bioreason.training.stage_cache); `stage_cache: null`
        # in the study's base turns that off
        config = {"stage_cache": os.path.join(out, "stage_cache"), **run.config, "output_dir": run_dir}
        with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh, sort_keys=True)
        with open(os.path.join(run_dir, "axes.json"), "w", encoding="utf-8") as fh:
            json.dump(run.axes, fh)
        todo.append(run_dir)
    return todo


def longest_first(todo: list[str], work: Callable[[dict], float]) -> list[str]:
    """The run folders, the most planned `work` first (a run's config -> a number; ties in grid order), so runs side
    by side end close together. In grid order the longest runs of a budget axis come last and one of them runs alone:
    `choose_jaspar_tf_class` (SFT 1,536 / 3,072 / 6,144 x 3 seeds; 13 / 23-27 / 44-48 min a run on one core, measured
    on a 2-core Intel Xeon), two at a time, would take 144 min in grid order, its last run alone for 33 min; longest
    first, 131 min, the two ending 7 min apart (by those times). The pipeline's measure is
    `bioreason.recipes.pipeline.planned_work` (the CLI passes it: this layer does not import the recipes)."""
    def planned(run_dir: str) -> float:
        with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as fh:
            return work(yaml.safe_load(fh))

    return sorted(todo, key=planned, reverse=True)  # sorted is stable: equal work keeps the grid order


def run_local(todo: list[str], jobs: int = 1) -> list[str]:
    """Run the folders `jobs` at a time on this machine; returns the failures. Several small runs side by side use a
    few cores better than one run's threads do (model loading, evaluation and generation are serial), so each run
    gets `cores // jobs` threads and the cores are not oversubscribed."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    threads = None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)
    failures: list[str] = []

    def one(item: tuple[int, str]) -> None:
        i, run_dir = item
        print(f"[{i}/{len(todo)}] {os.path.basename(run_dir)}", flush=True)
        try:
            run_one(run_dir, threads)
        except RuntimeError as err:
            failures.append(str(err))

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, enumerate(todo, 1)))
    return failures


def run_study(config_path: str, out: str, executor: str = "local", slurm: dict | None = None,
              cluster: str | None = None, jobs: int = 1, work: Callable[[dict], float] | None = None) -> dict:
    """Run the study's unfinished runs and harvest the table. `work` (a run's config -> its planned training): with
    `jobs` > 1 the runs start longest first."""
    study = load_study(config_path)
    runs = expand(study)
    os.makedirs(out, exist_ok=True)
    todo = prepare(runs, out)
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run", flush=True)
    failures = []
    if executor == "local":
        failures = run_local(longest_first(todo, work) if jobs > 1 and work else todo, jobs)
    elif executor == "submitit":
        import submitit

        ex = submitit.AutoExecutor(folder=os.path.join(out, "submitit"), cluster=cluster)
        ex.update_parameters(**(slurm or study.get("slurm") or {}))
        jobs = [ex.submit(run_one, run_dir) for run_dir in todo]
        for job in jobs:
            try:
                job.result()
            except Exception as err:  # submitit wraps the job's exception
                failures.append(str(err))
    else:
        raise ValueError(f"executor must be 'local' or 'submitit', got {executor!r}")
    table = harvest(out)
    if not failures:  # every run finished: the shared stages (a merged model each) have served their purpose
        shutil.rmtree(os.path.join(out, "stage_cache"), ignore_errors=True)
    return {"runs": len(runs), "ran": len(todo), "failed": failures, "harvested": len(table)}


CURVE_SPLITS = ("validation", "id", "ood")
CURVE_COLUMNS = ["run", "stage", "step", "examples",
                 *(f"{split}_{m}" for split in CURVE_SPLITS for m in ("accuracy", "reliance"))]
SCORED = ("accuracy", "macro_f1", "reliance", "reliance_cross_label")  # with their _lo / _hi where a run has them


def curve_rows(run_dir: str, name: str, metrics: dict) -> list[dict]:
    """A run's periodic evaluations (`eval_every_steps`) as rows; `examples` = steps x the stage's examples a step
    (SFT: `sft.per_device_train_batch_size`; GRPO: prompts, its batch over `num_generations`), from the resolved
    sections in the run's run_config.json."""
    points = metrics.get("curve") or []
    if not points:
        return []
    with open(os.path.join(run_dir, "run_config.json"), encoding="utf-8") as fh:
        pipeline = json.load(fh)["pipeline"]
    grpo = pipeline["grpo"]
    per_step = {"sft": pipeline["sft"]["per_device_train_batch_size"],
                "grpo": grpo["per_device_train_batch_size"] // grpo["num_generations"],
                "cpt": pipeline["cpt"]["per_device_train_batch_size"]}
    return [{"run": name, "stage": p["stage"], "step": p["step"], "examples": p["step"] * per_step.get(p["stage"], 1),
             **{f"{split}_{m}": p.get(split, {}).get(m) for split in CURVE_SPLITS for m in ("accuracy", "reliance")}}
            for p in points]


def harvest(out: str):
    """One row per finished run: its axes and key config values, then validation / ID / OOD metrics after each stage
    and final, each with its 95% interval (`*_lo`, `*_hi`); the runs' periodic evaluations go to `curve.csv`, one row
    a point. A study's best run is chosen on `validation_accuracy`."""
    import pandas as pd

    rows, curve = [], []
    runs_dir = os.path.join(out, "runs")
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        run_dir = os.path.join(runs_dir, name)
        if not os.path.exists(os.path.join(run_dir, "DONE")):
            continue
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
            metrics = json.load(fh)
        with open(os.path.join(run_dir, "axes.json"), encoding="utf-8") as fh:
            axes = json.load(fh)
        row = {"run": name, **{f"axis_{k}": v for k, v in axes.items()}, **metrics.get("budget", {})}
        row["stages"] = "+".join(s["name"] for s in metrics["stages"] if s["name"] != "base")
        final = [s for s in metrics["stages"] if s["name"] != "base"][-1]
        for prefix, stage in [*((f"{s['name']}_", s) for s in metrics["stages"]), ("", final)]:
            for split in ("validation", "id", "ood"):
                for key in (f"{m}{end}" for m in SCORED for end in ("", "_lo", "_hi")):
                    if key in stage.get(split, {}):
                        row[f"{prefix}{split}_{key}"] = stage[split][key]
        for split in ("validation", "id", "ood"):
            for baseline_name, baseline in metrics.get("baselines", {}).items():  # the same records as the scores
                for end in ("", "_lo", "_hi"):
                    row[f"{baseline_name}_{split}_accuracy{end}"] = baseline.get(split, {}).get(f"accuracy{end}")
        # the time this run trained: a stage it loaded from the stage cache was trained (and counted) by another run
        row["train_seconds"] = sum(s["seconds"] for s in metrics["stages"]
                                   if s["name"] != "base" and "shared_from" not in s)
        rows.append(row)
        curve += curve_rows(run_dir, name, metrics)
    table = pd.DataFrame(rows)
    for name, write in (("curve.csv", lambda p: pd.DataFrame(curve, columns=CURVE_COLUMNS).to_csv(p, index=False)),
                        ("results.csv", lambda p: table.to_csv(p, index=False)),
                        ("results.parquet", lambda p: table.to_parquet(p, index=False))):
        tmp = os.path.join(out, f".{name}.tmp")
        write(tmp)
        os.replace(tmp, os.path.join(out, name))  # a study killed while harvesting keeps the previous table whole
    return table


def plan(config_path: str) -> list[Run]:
    return expand(load_study(config_path))


__all__ = ["Run", "expand", "harvest", "load_study", "plan", "run_local", "run_one", "run_study", "thread_env"]
