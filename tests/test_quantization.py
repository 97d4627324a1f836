"""bitsandbytes: the LLM's linear layers quantize, encoders / projectors / lm_head stay in full precision."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from bioreason import BioReasonForCausalLM
from bioreason.training.adaptation import quantization_config

bnb = pytest.importorskip("bitsandbytes")


def test_4bit_llm_keeps_encoders_and_projectors_unquantized(tmp_path):
    model, processor = tiny_model("esm2", projector="mlp2x_gelu", hidden=64)  # CPU NF4 needs in_features % 64 == 0
    model.save_pretrained(tmp_path)
    quantized = BioReasonForCausalLM.from_pretrained(tmp_path, quantization_config=quantization_config(bits=4))
    llm_linears = [m for n, m in quantized.model.language_model.named_modules() if n.endswith(("q_proj", "down_proj"))]
    assert llm_linears and all(isinstance(m, bnb.nn.Linear4bit) for m in llm_linears)
    for part in (quantized.model.encoders, quantized.model.projectors):
        linears = [m for m in part.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and not any(isinstance(m, bnb.nn.Linear4bit) for m in linears)
    assert not isinstance(quantized.lm_head, bnb.nn.Linear4bit)
    inputs = processor(text=["Describe <protein>."], protein=["MKTAYIAKQR"])
    with torch.no_grad():
        ref = model.eval()(**inputs).logits
        got = quantized.eval()(**inputs).logits
    assert torch.isfinite(got).all()
    assert torch.nn.functional.cosine_similarity(ref.flatten(), got.float().flatten(), dim=0) > 0.9
