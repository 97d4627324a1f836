"""The console command starts without torch or transformers where it needs no model (`bioreason --help`, `data
check`), and registers the Auto classes before any command that does. Import sets, not timings: `bench/p10_startup.py`
times the same commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bioreason_cli import needs_model

HEAVY = ("torch", "transformers", "trl", "peft")


def run_entry(code: str) -> dict:
    """Run `code` in a fresh interpreter that came in through the console entry point; it prints a JSON dict."""
    proc = subprocess.run([sys.executable, "-c", "import bioreason_cli, json, sys\n" + code],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_top_level_help_imports_neither_torch_nor_transformers():
    out = run_entry("import contextlib, io\n"
                    "buf = io.StringIO()\n"
                    "with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n"
                    "    bioreason_cli.main(['--help'])\n"
                    f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], "
                    "'help': buf.getvalue()}))")
    assert out["heavy"] == []
    for command in ("compose", "generate", "data", "run", "eval", "study"):
        assert command in out["help"]


def test_data_check_imports_neither_torch_nor_transformers(tmp_path):
    data = tmp_path / "ab"
    build = subprocess.run([sys.executable, "-m", "bioreason_cli", "data", "build", "--benchmark", "antibody_chain",
                            "--out", str(data)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    out = run_entry(f"rc = bioreason_cli.main(['data', 'check', {str(data)!r}])\n"
                    f"print(json.dumps({{'rc': rc, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    assert out == {"rc": 0, "heavy": []}


def test_a_model_command_registers_the_auto_classes_first():
    """`bioreason eval` loads a folder through AutoModelForCausalLM: the entry point registers before dispatch (the
    command itself is replaced here, so only the registration is exercised)."""
    out = run_entry("import bioreason.cli as cli\n"
                    "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
                    "before = 'bioreason' in CONFIG_MAPPING\n"
                    "cli.main = lambda argv: 0\n"
                    "rc = bioreason_cli.main(['eval', '--model', 'm', '--data', 'd', '--out', 'o'])\n"
                    "print(json.dumps({'before': before, 'after': 'bioreason' in CONFIG_MAPPING, 'rc': rc}))")
    assert out == {"before": False, "after": True, "rc": 0}


def test_a_library_import_still_registers_the_auto_classes():
    proc = subprocess.run([sys.executable, "-c", "import bioreason\n"
                           "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
                           "print('bioreason' in CONFIG_MAPPING, bioreason.BioReasonConfig.model_type)"],
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["True", "bioreason"], proc.stderr[-2000:]


@pytest.mark.parametrize(("argv", "expected"), [
    ([], False), (["--help"], False), (["-h"], False), (["data", "check", "d"], False),
    (["--debug", "data", "build", "--benchmark", "x"], False), (["cache", "info"], False),
    (["eval", "--help"], False), (["run", "--help"], False),
    (["eval", "--model", "m"], True), (["run", "sft", "--config", "c"], True), (["generate"], True),
    (["study", "run", "c"], True), (["--debug", "push", "r", "me/m"], True),
])
def test_which_commands_need_the_model_classes(argv, expected):
    assert needs_model(argv) is expected


def test_unknown_attribute_of_the_package_is_an_attribute_error():
    import bioreason

    with pytest.raises(AttributeError, match="no_such_name"):
        bioreason.no_such_name  # noqa: B018


def test_cell_names_read_with_h5py_equal_anndatas_obs_names(tmp_path):
    import anndata
    import numpy as np

    from bioreason.data.records import cell_names

    names = [f"cell-{i}" for i in range(7)] + ["ünïcode", "with space"]
    adata = anndata.AnnData(np.ones((len(names), 3), dtype=np.float32))
    adata.obs_names = names
    adata.write_h5ad(tmp_path / "cells.h5ad")
    assert cell_names(str(tmp_path)) == set(names) == set(anndata.read_h5ad(tmp_path / "cells.h5ad").obs_names)
