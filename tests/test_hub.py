"""Publishing: the exported folder, the card's metadata, remote-code loading without bioreason, and uploads checked at
huggingface_hub's HTTP boundary (a fake Hub behind an httpx mock transport: there is no network here)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import BLOCK_BIOREASON, tiny_model
from huggingface_hub import ModelCard

from bioreason.hub import publish as hub

TOKEN = "hf_testtokenXYZ123"
SMOLLM2_SOURCE = {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "path": "default",
                  "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
HEAVY = "EVQLVESGGGLVQPGGSLRLSCAAS"


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as the pipeline leaves it: final/, metrics.json, run_config.json, plus things never published."""
    model, processor = tiny_model("antiberty", projector="mean", llm_source=SMOLLM2_SOURCE)  # as from the default
    final = tmp_path / "run" / "final"
    model.save_pretrained(final)
    processor.save_pretrained(final)
    (final / "training_args.bin").write_bytes(b"pickle")  # never published
    stages = [{"name": n, "id": {"n": 8, "accuracy": a, "macro_f1": a / 2}, "ood": {"n": 8, "accuracy": a / 2,
               "macro_f1": a / 4}, "steps": 3, "seconds": 1.0} for n, a in (("sft", 0.75), ("grpo", 0.5))]
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"stages": stages, "budget": {"sft_lora_r": 16}}))
    (tmp_path / "run" / "run_config.json").write_text(json.dumps({"dataset": "benchmark:antibody_chain"}))
    return str(tmp_path / "run")


def test_export_writes_a_complete_safetensors_only_folder(run_dir, tmp_path):
    out = hub.export_folder(run_dir, str(tmp_path / "out"), repo_id="me/antibody")
    files = {os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs}
    assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "README.md",
            "modeling_bioreason.py", "configuration_bioreason.py", "processing_bioreason.py",
            ".eval_results/id.yaml", ".eval_results/ood.yaml"} <= files
    assert not [f for f in files if f.endswith(hub.PICKLE_SUFFIXES)]
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_bioreason.BioReasonForCausalLM"
    assert config["modalities"]["protein"]["encoder"]["type"] == "antiberty"  # the encoder spec travels in config
    for name in files:
        if name.endswith(".py"):
            code = open(os.path.join(out, name)).read()
            assert "from bioreason." not in code.replace("from bioreason.model.composition", "").replace(
                "from bioreason.hub.publish", "")
            assert "from encoders." not in code and "from projectors." not in code


def test_card_metadata_round_trip(run_dir, tmp_path):
    out = hub.export_folder(run_dir, str(tmp_path / "out"), repo_id="me/antibody")
    card = ModelCard.load(os.path.join(out, "README.md"))
    data = card.data
    assert data.base_model == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert data.library_name == "transformers" and {"biology", "proteomics"} <= set(data.tags)
    assert data.license == "other" and data.license_name == "apache-2.0-and-mit"  # SmolLM2 + AntiBERTy
    assert data.license_link == "LICENSE"
    licence = open(os.path.join(out, "LICENSE"), encoding="utf-8").read()
    for row in ("| LLM | `HuggingFaceTB/SmolLM2-135M-Instruct` | apache-2.0 |", "| protein encoder (antiberty) |"):
        assert row in licence and row in card.text  # the card's License section lists the same parts
    assert re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", data.license_name)  # a Hub license id, not an SPDX expression
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert results[("id_test", "accuracy")] == 0.5 and results[("ood_test", "accuracy")] == 0.25
    assert "| sft | 3 |" in card.text and "| grpo | 3 |" in card.text and "Intended use" in card.text


def test_a_non_smollm2_model_is_published_with_its_own_base_model(tmp_path, fake_hub):
    """Before, a folder without run_config.json (publishing a model in memory saves it to a temporary one) was
    published with SmolLM2 as base_model and SmolLM2's license, whatever its LLM."""
    qwen = {"base_model": "Qwen/Qwen3-0.6B", "path": "Qwen/Qwen3-0.6B", "gguf_file": None}
    model, processor = tiny_model("esm2", projector="mean", family="qwen3", llm_source=qwen)
    with pytest.raises(ValueError, match=r"license of \['Qwen/Qwen3-0.6B'\] is not known here"):
        hub.push_model(model, processor, "me/qwen-protein", token=TOKEN)  # refuses to guess the license
    hub.push_model(model, processor, "me/qwen-protein", token=TOKEN, license="apache-2.0")
    card = fake_hub.contents["README.md"].decode()
    assert "base_model:\n- Qwen/Qwen3-0.6B\nlibrary_name" in card and "SmolLM2" not in card
    assert "- facebook" not in card  # the tiny ESM2 has no hub source: nothing invented


def test_a_model_that_does_not_record_its_llm_is_refused_unless_told(tmp_path):
    model, processor = tiny_model("antiberty", projector="mean")  # an LLM built in memory: no hub id
    assert model.config.llm_source["base_model"] is None
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="does not record the hub id of its LLM.*pass --base-model"):
        hub.export_folder(str(tmp_path / "m"), str(tmp_path / "out"), repo_id="me/m")
    out = hub.export_folder(str(tmp_path / "m"), str(tmp_path / "out2"), repo_id="me/m", license="mit",
                            base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert ModelCard.load(os.path.join(out, "README.md")).data.base_model == ["HuggingFaceTB/SmolLM2-135M-Instruct"]


def test_the_card_says_the_llm_is_a_dequantised_gguf(run_dir, tmp_path):
    out = hub.export_folder(run_dir, str(tmp_path / "out"), repo_id="me/antibody")
    text = open(os.path.join(out, "README.md")).read()
    assert ("HuggingFaceTB/SmolLM2-135M-Instruct (dequantised from the GGUF file SmolLM2-135M-Instruct.Q4_1.gguf)"
            in text)


@pytest.mark.parametrize(("given", "expected"), [
    ("Qwen/Qwen3-0.6B", {"base_model": "Qwen/Qwen3-0.6B", "gguf_file": None}),
    ("LOCAL", {"base_model": None, "gguf_file": None}),  # a local folder: its hub id is not known
    ("OTHER_GGUF", {"base_model": None, "gguf_file": "my-llm.Q8_0.gguf"}),
    ("DEFAULT", {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}),
])
def test_compose_records_where_its_llm_came_from(tmp_path, given, expected):
    from bioreason.model.composition import default_llm_path, describe_llm

    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text("{}")
    (tmp_path / "my-llm.Q8_0.gguf").write_bytes(b"")
    source = {"LOCAL": str(tmp_path / "folder"), "OTHER_GGUF": str(tmp_path / "my-llm.Q8_0.gguf"),
              "DEFAULT": default_llm_path()}.get(given, given)
    described = describe_llm(source)
    assert {k: described[k] for k in expected} == expected
    assert described["path"] == (source if given == "Qwen/Qwen3-0.6B" else os.path.basename(source))  # no local path


def test_license_rules(run_dir):
    model = tiny_model("esm2")[0]
    assert hub.derive_license(model, "x/y", stated="mit") == ("mit", None)
    with pytest.raises(ValueError, match=r"license of \['x/y'\] is not known here; pass --license"):
        hub.derive_license(model, "x/y")
    assert hub.derive_license(model, "HuggingFaceTB/SmolLM2-135M-Instruct") == ("other", "apache-2.0-and-mit")
    assert hub.derive_license(tiny_model("kmer")[0], "HuggingFaceTB/SmolLM2-135M-Instruct") == ("apache-2.0", None)


def test_export_refuses_a_folder_without_safetensors(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="no safetensors weights to publish"):
        hub.export_folder(str(tmp_path / "m"), str(tmp_path / "out"))


REMOTE_LOAD = BLOCK_BIOREASON + r"""
import json
import torch
from transformers import AutoModelForCausalLM, AutoProcessor
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
inputs = processor(text=["Which chain? <protein>"], protein=[sys.argv[2]])
with torch.no_grad():
    logits = model(**inputs).logits
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
torch.save(logits, sys.argv[3])
print(json.dumps({"module": type(model).__module__, "generated": out.shape[1] - inputs["input_ids"].shape[1],
                  "bioreason_imported": any(m.split(".")[0] == "bioreason" for m in sys.modules)}))
"""


def test_remote_code_loads_where_bioreason_cannot_be_imported(run_dir, tmp_path):
    out = hub.export_folder(run_dir, str(tmp_path / "out"))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", REMOTE_LOAD, out, HEAVY, str(tmp_path / "logits.pt")],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules.") and not result["bioreason_imported"]
    assert result["generated"] == 3
    from transformers import AutoModelForCausalLM, AutoProcessor

    model = AutoModelForCausalLM.from_pretrained(hub.model_dir(run_dir)).eval()
    processor = AutoProcessor.from_pretrained(hub.model_dir(run_dir))
    with torch.no_grad():
        expected = model(**processor(text=["Which chain? <protein>"], protein=[HEAVY])).logits
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


class FakeHub:
    """Just enough of the Hub's HTTP API for create_repo + upload_folder: every file is a regular (inline) upload,
    and each stored file's git blob id is returned by preupload, as the real Hub does for unchanged files."""

    def __init__(self):
        self.files: dict[str, str] = {}
        self.contents: dict[str, bytes] = {}
        self.requests: list = []
        self.commits = 0

    def handler(self, request):
        import httpx2

        self.requests.append(request)
        path = request.url.path
        if path == "/api/validate-yaml":  # the Hub checks the card's metadata block: check that it parses
            import yaml

            yaml.safe_load(json.loads(request.content)["content"].split("---")[1])
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": "https://huggingface.co/me/antibody", "name": "me/antibody"})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": self.files.get(f["path"])}
                for f in files]})
        if "/commit/" in path:
            self.commits += 1
            for line in request.content.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    data = base64.b64decode(item["value"]["content"])
                    self.files[item["value"]["path"]] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                    self.last_payload = getattr(self, "last_payload", b"") + data
                    self.contents[item["value"]["path"]] = data
            return httpx2.Response(200, json={"commitUrl": f"https://huggingface.co/me/antibody/commit/c{self.commits}",
                                              "commitOid": f"c{self.commits}" + "0" * 38, "success": True})
        if "/revision/" in path or path == "/api/models/me/antibody":
            return httpx2.Response(200, json={"id": "me/antibody", "sha": f"c{self.commits}" + "0" * 38,
                                              "siblings": [{"rfilename": f} for f in self.files]})
        return httpx2.Response(404, json={"error": f"not faked: {request.method} {path}"})


@pytest.fixture
def fake_hub(monkeypatch):
    import httpx2
    from huggingface_hub.utils import _http

    fake = FakeHub()
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(fake.handler)))
    yield fake
    _http.set_client_factory(_http.default_client_factory)


def test_push_uploads_once_and_an_unchanged_push_makes_no_commit(run_dir, fake_hub, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    first = hub.push(run_dir, "me/antibody", private=True, token=TOKEN)
    assert fake_hub.commits == 1 and "commit/c1" in first.commit_url
    assert {"model.safetensors", "README.md", "modeling_bioreason.py", ".eval_results/id.yaml"} <= set(fake_hub.files)
    assert not [f for f in fake_hub.files if f.endswith(hub.PICKLE_SUFFIXES)]
    create = next(r for r in fake_hub.requests if r.url.path == "/api/repos/create")
    assert json.loads(create.content)["visibility"] == "private"
    writes = [r for r in fake_hub.requests if r.method == "POST" and "validate-yaml" not in r.url.path]
    assert writes and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in writes)
    assert TOKEN.encode() not in fake_hub.last_payload  # the token is a header, never file content
    hub.push(run_dir, "me/antibody", token=TOKEN)
    assert fake_hub.commits == 1  # nothing changed: no new commit
    assert "No files have been modified" in caplog.text and TOKEN not in caplog.text


def test_cli_dry_run_and_card(run_dir, tmp_path):
    out = tmp_path / "dry"
    proc = subprocess.run([sys.executable, "-m", "bioreason.cli", "push", run_dir, "me/antibody", "--dry-run",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nothing was sent" in proc.stdout and (out / "model.safetensors").exists()
    proc = subprocess.run([sys.executable, "-m", "bioreason.cli", "card", run_dir, "--license", "apache-2.0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "license: apache-2.0" in proc.stdout and "model-index" in proc.stdout


def test_a_symlinked_file_in_the_model_folder_is_refused_not_uploaded(run_dir, tmp_path):
    """A link would copy (and upload) whatever it points to, e.g. a private file outside the run."""
    secret = tmp_path / "secret.json"
    secret.write_text('{"token": "hf_private"}')
    os.remove(os.path.join(run_dir, "final", "tokenizer.json"))
    os.symlink(secret, os.path.join(run_dir, "final", "tokenizer.json"))
    with pytest.raises(ValueError, match="is a symbolic link"):
        hub.export_folder(run_dir, str(tmp_path / "out"), repo_id="me/antibody")


def test_published_eval_results_name_a_local_dataset_by_its_folder_only(run_dir, tmp_path):
    (tmp_path / "run" / "run_config.json").write_text(json.dumps({"dataset": "/home/alice/private/cells-v2/"}))
    out = hub.export_folder(run_dir, str(tmp_path / "out"), repo_id="me/antibody")
    published = "".join(open(os.path.join(d, f)).read() for d, _, fs in os.walk(out) for f in fs
                        if f.endswith((".yaml", ".md")))
    assert "/home/alice" not in published and "cells-v2" in published


def test_the_card_of_a_trained_model_shows_its_task_and_its_snippet_runs_without_bioreason(run_dir, tmp_path):
    """The card's "How to use", run as written on the exported folder (its one placeholder filled with a sequence)
    where bioreason cannot be imported: the remote code asks the saved task's question."""
    from conftest import code_block
    from transformers import AutoProcessor

    from bioreason.data.chat import ANSWER_FORMAT, SYSTEM_PROMPT

    final = os.path.join(run_dir, "final")
    processor = AutoProcessor.from_pretrained(final)
    processor.task = {"system_prompt": SYSTEM_PROMPT, "label_set": ["heavy", "kappa", "lambda"],
                      "question": "<protein>\nWhich chain? Answer with one of: heavy, kappa, lambda.",
                      "answer_format": ANSWER_FORMAT}
    processor.save_pretrained(final)
    out = hub.export_folder(run_dir, str(tmp_path / "out"), repo_id=str(tmp_path / "out"))
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "## How to use" in card and "> <protein> Which chain? Answer with one of: heavy, kappa, lambda." in card
    assert "the answer is one of\nheavy, kappa, lambda" in card and "encoders)" not in card  # one encoder
    assert '```bash\npip install "transformers>=5,<6" torch safetensors\n```' in card  # AntiBERTy needs no package
    snippet = code_block(card, "card-how-to-use")
    assert "trust_remote_code=True" in snippet and "import bioreason" not in snippet
    filled = snippet.replace('sequence = "..."', f'sequence = "{HEAVY}"')
    assert filled != snippet
    probe = ("\nimport json\nprint(json.dumps({'prompt': processor.task_prompt(), 'bioreason_imported': "
             "any(m.split('.')[0] == 'bioreason' for m in sys.modules)}))\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", BLOCK_BIOREASON + filled + probe], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["bioreason_imported"]
    assert result["prompt"].startswith("<|im_start|>system\n" + SYSTEM_PROMPT) and "Which chain?" in result["prompt"]
