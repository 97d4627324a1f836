"""p10_startup: seconds from starting the console command to its exit, for the commands that need no model:
`bioreason --help` and `bioreason data check` on a protein and an rna benchmark; issue 26's ceiling is 1 s.

Why: every command took 4.6-5 s to start, `--help` included, because `import bioreason` registers the model with
transformers' Auto classes (torch + transformers). The console entry point (`bioreason_cli`) now defers that to the
commands that load a model. Each command runs 5 times in a fresh interpreter, as a user's shell runs it (median);
`python -c "import bioreason"`, the library import that still registers, is timed in the same run for scale."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from bench.common import Result

REPEATS = 5


def wall(argv: list[str]) -> float:
    runs = []
    for _ in range(REPEATS + 1):  # the first run warms the page cache and is dropped
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        runs.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr[-500:]}")
    return statistics.median(runs[1:])


def run() -> list[Result]:
    from bioreason.data.tasks import task_folder

    entry = [sys.executable, "-m", "bioreason_cli"]
    library_s = wall([sys.executable, "-c", "import bioreason"])
    results = []
    commands = {"help": ["--help"]}
    for name in ("antibody_chain", "pbmc_cell_type"):
        # built once under runs/data, as the recipes build it
        commands[f"data_check_{name}"] = ["data", "check", task_folder(f"benchmark:{name}")]
    for key, args in commands.items():
        seconds = wall(entry + args)
        results.append(Result(
            f"p10_startup_{key}", seconds, 1.0, "s", f"`bioreason {' '.join(args[:2])}` start to exit "
            f"({'' if key == 'help' else key.removeprefix('data_check_') + ', '}median of {REPEATS})",
            {"library_import_s": round(library_s, 2), "over_library_import": round(seconds / library_s, 3)},
            lower_is_better=True))
    return results
