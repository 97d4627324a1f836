"""The quickstart's trained model asked as a user asks it: `bioreason generate` without `--prompt`, the README's
Python block and the exported folder's model card block, each run as written, name trastuzumab's VH `heavy` and its
VL `kappa`. Needs `runs/quickstart/final` from `make quickstart` (CI runs this file after it); skipped without it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import BLOCK_BIOREASON, code_block

from bioreason.data.chat import parse_answer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "runs", "quickstart")
FINAL = os.path.join(RUN, "final")


def trastuzumab() -> dict[str, str]:
    with open(os.path.join(ROOT, "bioreason", "assets", "trastuzumab_fv.fasta"), encoding="utf-8") as fh:
        lines = fh.read().split(">")[1:]
    return {chunk.split()[0].split("_")[1]: "".join(chunk.splitlines()[1:]) for chunk in lines}  # VH, VL


EXPECTED = {"VH": "heavy", "VL": "kappa"}


@pytest.fixture(scope="module")
def final():
    if not os.path.exists(os.path.join(FINAL, "config.json")):
        pytest.skip("needs runs/quickstart/final: run `make quickstart` first")
    with open(os.path.join(FINAL, "processor_config.json"), encoding="utf-8") as fh:
        if not (json.load(fh).get("task") or {}).get("question"):
            pytest.skip("runs/quickstart/final was trained before models saved their task: rerun `make quickstart`")
    return FINAL


def run_python(code: str, cwd: str, env: dict | None = None) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_generate_without_a_prompt_asks_the_task_question(final, capsys):
    from bioreason.cli import main

    assert main(["generate", "--model", final, "--each", "--protein",
                 f"@{os.path.join(ROOT, 'bioreason', 'assets', 'trastuzumab_fv.fasta')}"]) == 0
    pieces = re.split(r"^trastuzumab_(\w+): ", capsys.readouterr().out, flags=re.MULTILINE)[1:]  # name, answer...
    got = {name: parse_answer(text).answer for name, text in zip(pieces[::2], pieces[1::2], strict=True)}
    assert got == EXPECTED, pieces


def test_the_readme_block_answers_as_written(final):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        snippet = code_block(fh.read(), "ask-the-trained-model")
    chains = trastuzumab()
    assert f'vh = "{chains["VH"]}"' in snippet  # the README's sequence is the bundled VH
    for chain, sequence in chains.items():  # as written for VH; the same block with the VL for VL
        code = snippet.replace(chains["VH"], sequence)
        answer = parse_answer(run_python(code, ROOT).strip().splitlines()[-1]).answer
        assert answer == EXPECTED[chain], (chain, answer)


def test_the_exported_card_block_answers_without_bioreason(final, tmp_path):
    from bioreason.hub import publish as hub

    out = hub.export_folder(RUN, str(tmp_path / "export"), repo_id=str(tmp_path / "export"))
    with open(os.path.join(out, "README.md"), encoding="utf-8") as fh:
        snippet = code_block(fh.read(), "card-how-to-use")
    assert "trust_remote_code=True" in snippet and 'sequence = "..."' in snippet
    for chain, sequence in trastuzumab().items():
        code = BLOCK_BIOREASON + snippet.replace('sequence = "..."', f'sequence = "{sequence}"')
        output = run_python(code, str(tmp_path), env={"HF_HOME": str(tmp_path / "hf")})
        answer = parse_answer(output.strip().splitlines()[-1]).answer
        assert answer == EXPECTED[chain], (chain, output[-500:])
