"""Adaptation capacity: PEFT LoRA on the LLM with projectors trained fully, and bitsandbytes 4/8-bit LLMs.

Why LoRA targets only `language_model`: the study varies LLM adaptation capacity per stage (SFT rank 256, RL rank 16)
while projectors, small and freshly initialised, always train in full (`modules_to_save`). Encoders and projectors stay
unquantized: bitsandbytes cannot train a quantized projector, and encoder precision is not where the memory goes.
"""

from __future__ import annotations

from typing import Any

import torch

LLM_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
UNQUANTIZED = ["model.encoders", "model.projectors", "lm_head"]


def lora_config(modalities: list[str], r: int = 16, alpha: int | None = None, dropout: float = 0.0,
                target_modules: tuple[str, ...] = LLM_LINEAR_NAMES, train_projectors: bool = True,
                train_encoders: tuple[str, ...] = (), use_rslora: bool = False, use_dora: bool = False,
                extra_modules_to_save: list[str] | None = None, target_parameters: list[str] | None = None) -> Any:
    """A `peft.LoraConfig` for the LLM's linear layers only (alpha defaults to 2 x r, as in the seed study), with
    each modality's projector saved and trained in full (PEFT needs the projector modules themselves, not their
    ModuleDict), and so are the encoders of `train_encoders`: PEFT freezes every module it is not told to save."""
    from peft import LoraConfig

    saved = [f"projectors.{m}" for m in modalities] if train_projectors else []
    saved += [f"encoders.{m}" for m in train_encoders]
    saved += list(extra_modules_to_save or [])

    return LoraConfig(
        r=r,
        lora_alpha=alpha if alpha is not None else 2 * r,
        lora_dropout=dropout,
        target_modules=rf".*language_model.*\.({'|'.join(target_modules)})",
        modules_to_save=saved or None,
        task_type="CAUSAL_LM",
        use_rslora=use_rslora,
        use_dora=use_dora,
        target_parameters=target_parameters,
    )


def apply_lora(model: torch.nn.Module, r: int = 16, alpha: int | None = None, **kwargs: Any) -> Any:
    """Wrap a BioReason model with LoRA adapters; the base LLM and embeddings freeze, and the projectors and encoders
    train in full where the model's freeze policy trains them (a trainable encoder such as `expression` keeps
    training; projectors a stage froze stay frozen)."""
    from peft import get_peft_model

    inner = model if hasattr(model, "encoder_trainable") else model.model  # BioReasonModel under the causal-LM head
    kwargs.setdefault("train_encoders", tuple(m for m in model.config.modalities if inner.encoder_trainable(m)))
    kwargs.setdefault("train_projectors", model.config.projectors_trainable)
    return get_peft_model(model, lora_config(list(model.config.modalities), r=r, alpha=alpha, **kwargs))


def quantization_config(bits: int = 4, compute_dtype: torch.dtype = torch.bfloat16, quant_type: str = "nf4",
                        nested: bool = False, storage: str | None = None) -> Any:
    """`BitsAndBytesConfig` quantizing the LLM's linear layers and nothing else; pass it to `from_pretrained`."""
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                  bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_use_double_quant=nested,
                                  bnb_4bit_quant_storage=storage or "uint8", llm_int8_skip_modules=list(UNQUANTIZED))
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(UNQUANTIZED))
    raise ValueError(f"bits must be 4 or 8, got {bits}")


__all__ = ["apply_lora", "lora_config", "quantization_config"]
