"""The package follows the data path: no module imports one that imports it back (function-level imports count), and
every import between subpackages points upstream, from training and recipes towards data, never the other way."""

from __future__ import annotations

import ast
import pathlib

import bioreason

PACKAGE = pathlib.Path(bioreason.__file__).parent
# upstream first; "" is bioreason/__init__ (the Auto-class registration and the top-level names)
ORDER = ["data", "encoders", "projectors", "model", "", "evaluation", "training", "hub", "recipes", "cli"]


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["bioreason", *path.relative_to(PACKAGE).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(mods: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its body (a name imported from a package resolves to the
    submodule of that name when there is one)."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("bioreason"):
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("bioreason")]
            else:
                continue
            edges[module] |= {t for t in map(resolve, targets) if t and t != module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert cycles(imports(modules())) == []


def test_subpackages_import_only_upstream():
    mods = modules()
    assert {subpackage(m) for m in mods} == set(ORDER)
    backwards = sorted((a, b) for a, targets in imports(mods).items() for b in targets
                       if subpackage(a) != subpackage(b) and ORDER.index(subpackage(b)) > ORDER.index(subpackage(a)))
    assert backwards == []


def test_training_modules_stay_small_and_one_module_prepares_models():
    """`bioreason/training/` keeps each concern in a module of its own (none over ~350 lines), and the freeze policy
    and LoRA are applied in one place, `training/prepare.py`, that every path calls (stage scripts, the pipeline,
    CPT alignment): no other module of the package calls `apply_lora`, `apply_freeze_policy` or `set_trainable`."""
    for path in (PACKAGE / "training").glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 350, path.name
    owners = {PACKAGE / "training" / "prepare.py", PACKAGE / "training" / "adaptation.py"}
    for path in PACKAGE.rglob("*.py"):
        if path in owners or path.parent.name == "model":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                assert name not in ("apply_lora", "apply_freeze_policy", "set_trainable"), (
                    f"{path.relative_to(PACKAGE)}:{node.lineno} calls {name}: go through training.prepare")
