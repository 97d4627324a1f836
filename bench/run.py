"""`make bench`: run the benchmarks, write bench/results.json and BENCHMARKS.md.

    python -m bench.run                 # all
    python -m bench.run p3 p5           # some (the others keep their previous results)
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import sys
import time

from bench.common import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results.json")
REPORT = os.path.join(ROOT, "BENCHMARKS.md")
NOTES = os.path.join(ROOT, "bench", "NOTES.md")  # hand-written reading of the figures, kept across runs
ORDER = ("p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_all(selected: tuple[str, ...], save=None) -> dict:
    from bench import (
        p1_cache,
        p2_resampler,
        p3_grpo,
        p4_packing,
        p5_mfu,
        p6_quickstart,
        p7_eval,
        p8_sft,
        p9_reliance,
        p10_startup,
    )

    previous: dict = {}
    if os.path.exists(RESULTS):
        with open(RESULTS, encoding="utf-8") as fh:
            previous = json.load(fh)
    results, seconds, shared = dict(previous.get("results", {})), dict(previous.get("seconds", {})), {}
    here = machine()
    for result in results.values():  # figures kept from an earlier run keep the machine they were measured on
        result.setdefault("machine", previous.get("machine"))
    for key in selected:
        start = time.time()
        for name in [n for n in results if n.startswith(f"{key}_")]:  # a rerun replaces every figure of its
            del results[name]  # benchmark, so one it no longer reports does not linger
        if key in ("p1", "p3"):  # one ESM2-650M-shaped model serves both (its random init takes a while)
            if "model" not in shared:
                shared["model"], shared["processor"] = p1_cache.build()
            out = (p1_cache if key == "p1" else p3_grpo).run(shared["model"], shared["processor"])
            if key == "p3" or "p3" not in selected:
                shared.clear()
        else:
            out = {"p2": p2_resampler, "p4": p4_packing, "p5": p5_mfu, "p6": p6_quickstart, "p7": p7_eval,
                   "p8": p8_sft, "p9": p9_reliance, "p10": p10_startup}[key].run()
        for result in out if isinstance(out, list) else [out]:
            results[result.name] = {**result.as_dict(), "measured": now(), "machine": here}
            print(f"{result.name}: {result.value:.3f} (goal {result.goal}) {'met' if result.met else 'NOT met'}",
                  flush=True)
        seconds[key] = round(time.time() - start, 1)
        gc.collect()
        if save is not None:  # after each benchmark, so a later failure keeps the figures measured so far
            save(summary(selected, here, seconds, results))
    return summary(selected, here, seconds, results)


def summary(selected: tuple[str, ...], here: dict, seconds: dict, results: dict) -> dict:
    return {"date": now(), "command": "make bench", "last_run": " ".join(selected), "machine": here,
            "seconds": seconds, "results": results}


def report(data: dict) -> str:
    m = data["machine"]
    lines = [
        "# Benchmarks", "",
        "Written by `make bench` (`python -m bench.run`); the numbers below are from the last run. Each ratio is "
        "measured in one run against its baseline on the same machine. Code: `bench/`; raw figures: "
        "`bench/results.json`.", "",
        f"- **Machine of the last run**: {describe(m)}",
        f"- **Written**: {data['date']} (last run: {data.get('last_run', 'all')}; each figure below says when it was "
        "measured)",
        f"- **Command**: `{data['command']}` (all; `python -m bench.run p3` reruns one)",
        f"- **Wall time per benchmark (s)**: {', '.join(f'{k} {v}' for k, v in data['seconds'].items())}", "",
        "| figure | measured | goal | met | machine | what |", "|---|---|---|---|---|---|",
    ]
    for name, r in sorted(data["results"].items()):
        goal = f"<= {r['goal']}" if r.get("lower_is_better") else f">= {r['goal']}"
        cpu = (r.get("machine") or {}).get("cpu", "?")
        precision = (r.get("machine") or {}).get("precision", "bf16 autocast (before bf16: auto)")
        lines.append(f"| `{name}` | {r['value']} {r['unit']} | {goal} | {'yes' if r['met'] else 'no'} | {cpu}, "
                     f"{precision} | {r['what']} |")
    if os.path.exists(NOTES):
        with open(NOTES, encoding="utf-8") as fh:
            lines += ["", fh.read().strip()]
    lines += ["", "## Details", ""]
    for name, r in sorted(data["results"].items()):
        lines += [f"### {name}", "", f"Measured {r.get('measured', data['date'])} on {describe(r.get('machine'))}.",
                  "", "```json",
                  json.dumps(r["details"], indent=1), "```", ""]
    return "\n".join(lines)


def describe(m: dict | None) -> str:
    if not m:
        return "an unrecorded machine"
    native = m.get("native_bf16")
    return (f"{m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), torch CPU capability "
            f"{m.get('cpu_capability', '?')}, AMX-BF16: {m['amx_bf16']}, AVX512-BF16: {m['avx512_bf16']}, native bf16: "
            f"{'?' if native is None else native} -> {m.get('precision', 'bf16 autocast (hard-coded then)')}, GPU: "
            f"{m['cuda'] or 'none'}; torch {m['torch']}, Python {m['python']}")


def main(argv: list[str] | None = None) -> None:
    args = tuple(argv if argv is not None else sys.argv[1:])
    unknown = [a for a in args if a not in ORDER]
    if unknown:  # `--help` once ran nothing and rewrote the report's date and machine
        sys.exit(f"usage: python -m bench.run [{' '.join(ORDER)}]; not a benchmark: {' '.join(unknown)}")
    selected = tuple(k for k in ORDER if not args or k in args)
    write(run_all(selected, save=write))
    print(f"wrote {RESULTS} and {REPORT}")


def write(data: dict) -> None:
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
    with open(REPORT, "w", encoding="utf-8") as fh:
        fh.write(report(data) + "\n")


if __name__ == "__main__":
    main()
