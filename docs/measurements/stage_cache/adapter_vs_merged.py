"""Stage-cache entries as merged models vs as what rebuilds them (the stage's LoRA adapter + the modules it trains in
full), on the quickstart's model (SmolLM2-135M + AntiBERTy, resampler 16 queries, LoRA r16 as SFT uses it): the size
of each on disk, and whether the rebuilt model equals the merged one bitwise.

    PYTHONPATH=. .venv/bin/python docs/measurements/stage_cache/adapter_vs_merged.py

A stage's training is stood in for by random changes to every trainable tensor (LoRA A and B, the projector), so the
merge has real work to do; the question is only what an entry must hold to give back the same weights."""

from __future__ import annotations

import json
import os
import tempfile

import torch


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main() -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from bioreason.model.composition import compose, default_llm_path
    from bioreason.training.arguments import ModelArguments
    from bioreason.training.prepare import prepare_model
    from bioreason.training.run_io import save_final

    torch.manual_seed(0)
    model, processor = compose(llm=default_llm_path(), encoders={"protein": "antiberty"},
                               projector={"type": "resampler", "options": {"num_queries": 16}},
                               attn_implementation="sdpa")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = f"{tmp}/start"
        save_final(model, processor, start)  # the model the stage starts from (the previous entry)
        peft = prepare_model(model, ModelArguments(use_peft=True, lora_r=16, feature_cache="off"))
        with torch.no_grad():  # stand-in for training: every trainable tensor moves
            for p in peft.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.01)
        peft.save_pretrained(f"{tmp}/adapter")  # adapter + modules_to_save (the projector)
        merged = peft.merge_and_unload()
        save_final(merged, processor, f"{tmp}/merged")
        rebuilt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(start), f"{tmp}/adapter")
        rebuilt = rebuilt.merge_and_unload()
        a, b = merged.state_dict(), rebuilt.state_dict()
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        out = {"merged_entry_mb": round(folder_bytes(f"{tmp}/merged") / 1e6, 1),
               "adapter_entry_mb": round(folder_bytes(f"{tmp}/adapter") / 1e6, 1),
               "trainable_params_m": round(trainable / 1e6, 2), "tensors": len(a),
               "tensors_differing_after_rebuild": len(differ), "first_differing": differ[:5]}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    result = main()
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "adapter_vs_merged.json"), "w") as fh:
        json.dump(result, fh, indent=1)
