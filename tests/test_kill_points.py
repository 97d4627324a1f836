"""The fault tests' coverage, counted from the code rather than written down: every `kill_point(...)` call in the
package names a registered point, every registered point is killed at by a fault test (tests/test_faults.py), and
the README's counts of those cases are the test lists' own lengths."""

from __future__ import annotations

import ast
import os
import re

import pytest
from test_faults import PIPELINE_CASES, STAGE_CASES

from bioreason.training.faults import KILL_POINTS, kill_point

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def points_in_code() -> set[str]:
    found = set()
    for dirpath, _, files in os.walk(os.path.join(ROOT, "bioreason")):
        for name in files:
            if not name.endswith(".py"):
                continue
            with open(os.path.join(dirpath, name), encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "kill_point":
                    assert isinstance(node.args[0], ast.Constant), f"{name}: a kill point is named by a literal"
                    found.add(node.args[0].value)
    return found


def test_every_kill_point_in_the_code_is_registered_and_killed_at_by_a_fault_test():
    assert points_in_code() == set(KILL_POINTS)
    tested = {case[1].split(":")[0] for case in STAGE_CASES} | {case[0].split(":")[0] for case in PIPELINE_CASES}
    assert tested == set(KILL_POINTS), f"not killed at by any fault test: {set(KILL_POINTS) - tested}"


def test_an_unregistered_kill_point_is_an_error(monkeypatch):
    monkeypatch.delenv("BIOREASON_KILL_AT", raising=False)
    with pytest.raises(ValueError, match="unknown kill point 'mid-nowhere'"):
        kill_point("mid-nowhere")


def test_the_readme_counts_the_fault_cases_the_tests_run():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = " ".join(fh.read().split())
    stage = re.search(r"SFT at (\d+) points, GRPO at (\d+)\)", readme)
    pipeline = re.search(r"test_a_pipeline_killed_anywhere_resumes_after_its_last_finished_stage`, (\d+) points",
                         readme)
    assert stage and pipeline
    assert int(stage.group(1)) == sum(recipe == "sft" for recipe, _, _ in STAGE_CASES)
    assert int(stage.group(2)) == sum(recipe == "grpo" for recipe, _, _ in STAGE_CASES)
    assert int(pipeline.group(1)) == len(PIPELINE_CASES)
