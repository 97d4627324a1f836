"""Write the inputs of the GPU check (`docs/gpu/check.sh`) into one folder small enough to travel to a lent GPU
machine (64 MiB): the quickstart's two models at their real architectures, vocabularies and chat template but with
tiny random weights, and the antibody_chain benchmark already built.

Why tiny: the real quickstart weights are a 98 MB GGUF (SmolLM2-135M-Instruct Q4_1) and a 100 MB AntiBERTy
checkpoint; neither fits the transfer limit, and the GPU machine reaches no package registry. What is kept real is
everything the code paths depend on: `LlamaForCausalLM` with SmolLM2's tokenizer (49,152 tokens, its chat template),
AntiBERTy's `BertConfig` and vocab.txt, and the bundled benchmark's records.

    PYTHONPATH=. .venv/bin/python docs/gpu/make_tiny_quickstart.py .gpu
"""

from __future__ import annotations

import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from bioreason.data.tasks import task_folder
from bioreason.encoders.protein import antiberty_default_dir
from bioreason.model.composition import SMOLLM2_GGUF, default_llm_path


def tiny_smollm2(out: str) -> None:
    """SmolLM2's tokenizer and chat template; a 2-layer, 64-wide Llama in place of its 30 x 576 weights."""
    gguf = default_llm_path()
    tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=SMOLLM2_GGUF)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def tiny_antiberty(out: str) -> None:
    """AntiBERTy's config (vocab, positions, absolute embeddings) at 2 x 64; its real vocab.txt."""
    real = antiberty_default_dir()
    config = BertConfig.from_pretrained(real)
    config.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4})
    torch.manual_seed(0)
    model = BertModel(config, add_pooling_layer=False)
    os.makedirs(out, exist_ok=True)
    config.save_pretrained(out)
    save_file({f"bert.{k}": v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(out, "model.safetensors"))
    shutil.copy(os.path.join(os.path.dirname(real), "vocab.txt"), os.path.join(out, "vocab.txt"))


def main(out: str) -> None:
    tiny_smollm2(os.path.join(out, "llm"))
    tiny_antiberty(os.path.join(out, "antiberty"))
    task_folder("benchmark:antibody_chain", os.path.join(out, "data"), seed=0)
    print(f"wrote {out}: llm/, antiberty/, data/antibody_chain-seed0/")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".gpu")
