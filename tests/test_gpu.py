"""GPU paths: bf16 on CUDA, flash-attention 2 through the LLM, bitsandbytes 4-bit. Skipped without a CUDA device
(CI has none); run with `pytest -m gpu` on a GPU machine."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def prompt():
    return {"text": ["Describe <protein>.", "What is <protein>?"], "protein": ["MKTAYIAKQR", "EVQLVESGG"]}


def test_bf16_cuda_forward_backward_and_generate():
    model, processor = tiny_model("esm2", hidden=64)
    model = model.to("cuda", torch.bfloat16)
    inputs = processor(**prompt()).to("cuda")
    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert all(p.grad is not None for p in model.model.projectors.parameters())
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4


def test_flash_attention_2_matches_sdpa(tmp_path):
    pytest.importorskip("flash_attn")
    from transformers import AutoModelForCausalLM

    model, processor = tiny_model("esm2", hidden=64)
    model.save_pretrained(tmp_path)
    flash = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="flash_attention_2",
                                                 dtype=torch.bfloat16).to("cuda").eval()
    sdpa = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa", dtype=torch.bfloat16).to(
        "cuda").eval()
    assert flash.model.language_model.config._attn_implementation == "flash_attention_2"
    inputs = processor(**prompt()).to("cuda")
    with torch.no_grad():
        a, b = flash(**inputs).logits.float(), sdpa(**inputs).logits.float()
    assert torch.allclose(a, b, atol=5e-2)


def test_bitsandbytes_4bit_on_cuda(tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    from bioreason import BioReasonForCausalLM
    from bioreason.training.adaptation import quantization_config

    model, processor = tiny_model("esm2", hidden=64)
    model.save_pretrained(tmp_path)
    quantized = BioReasonForCausalLM.from_pretrained(tmp_path, quantization_config=quantization_config(4),
                                                     device_map={"": 0})
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in quantized.model.language_model.modules())
    inputs = processor(**prompt()).to("cuda")
    with torch.no_grad():
        assert torch.isfinite(quantized(**inputs).logits).all()


def test_auto_precision_on_cuda_follows_the_device():
    from bioreason.model.precision import choose_bf16

    chosen = choose_bf16("auto", "cuda")
    assert chosen.bf16 is torch.cuda.is_bf16_supported(including_emulation=False)
    assert torch.cuda.get_device_name() in chosen.reason


def test_compact_lm_head_on_cuda_matches_full_head():
    from bioreason.model.lm_head import add_compact_lm_head

    model, processor = tiny_model("esm2", hidden=64)
    model = model.to("cuda")
    inputs = processor(**prompt()).to("cuda")
    labels = inputs["input_ids"].clone()
    labels[:, :-3] = -100
    full = model(**inputs, labels=labels).loss
    add_compact_lm_head(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = model(**inputs, labels=labels, fused_lm_head=True)
    exact = model(**inputs, labels=labels, fused_lm_head=True)
    assert torch.allclose(exact.loss, full, atol=1e-5) and mixed.log_probs.dtype == torch.float32


def test_features_cached_on_cpu_serve_the_model_on_cuda():
    """The pipeline scores its baselines before the Trainer moves the model to CUDA: entries remembered then must come
    back on the model's device (seen failing on an H200: "mat1 is on cpu" in the projector, docs/gpu/README.md)."""
    model, processor = tiny_model("esm2", hidden=64)
    model.enable_feature_cache()
    inputs = processor(**prompt())
    with torch.no_grad():
        on_cpu = model(**inputs).logits
        model = model.to("cuda")
        on_cuda = model(**inputs.to("cuda")).logits
    assert model.model.feature_cache.hits > 0
    assert torch.allclose(on_cpu, on_cuda.cpu(), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["fsdp2", "zero2", "zero3"])
def test_sft_through_the_sharded_accelerate_configs(tmp_path, launcher):
    """FSDP2 and ZeRO-2 / ZeRO-3 are GPU-only (accelerate trains plain DDP on CPU processes; the recipes refuse the
    combination): SFT through each shipped config on every visible GPU trains the projector and saves a whole
    model. Needs two GPUs, and deepspeed for ZeRO; none of these has run yet."""
    import json
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from bioreason.data.benchmarks import build_benchmark

    if torch.cuda.device_count() < 2:
        pytest.skip("sharding needs at least two GPUs")
    if launcher.startswith("zero"):
        pytest.importorskip("deepspeed")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model, processor = tiny_model("antiberty", projector="mean")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    build_benchmark("antibody_chain", str(tmp_path / "task"))
    config = tmp_path / "sft.yaml"
    config.write_text(f"model_name_or_path: {tmp_path / 'model'}\ndataset: {tmp_path / 'task'}\n"
                      f"output_dir: {tmp_path / 'out'}\nmax_train_examples: 32\nevaluate: false\n"
                      "per_device_train_batch_size: 2\nmax_steps: 2\nlearning_rate: 0.01\nuse_peft: true\n"
                      "lora_r: 4\nbf16: true\nreport_to: none\n")
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         os.path.join(root, "recipes", "accelerate", f"{launcher}.yaml"), "--num_processes",
         str(torch.cuda.device_count()), "-m", "bioreason.recipes.sft", "--config", str(config)],
        capture_output=True, text=True, timeout=1200, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["world_size"] == torch.cuda.device_count()
    before = load_file(tmp_path / "model" / "model.safetensors")
    after = load_file(tmp_path / "out" / "final" / "model.safetensors")
    keys = [k for k in before if k.startswith("model.projectors.")]
    assert keys and any(not torch.equal(before[k], after[k]) for k in keys)
