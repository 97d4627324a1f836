"""The LM head only where a loss or a score needs it, in fp32.

Why: SFT's loss sits on the assistant turn (about 10 of ~180 tokens per quickstart example), GRPO's on the completion,
and likelihood evaluation scores only the label continuation. TRL's fused LM head (`add_fused_lm_head`) projects only
those positions on Triton devices, but everywhere else (every CPU) it projects every position of every row, in
float32 tiles of torch ops. Rounding the head's products to bf16 instead was measured to train worse
(bioreason/recipes/sft.py).

`add_compact_lm_head` installs a head with the same contract as TRL's (`model(..., labels=..., fused_lm_head=True)`
returns TRL's `FusedCausalLMOutput`: per-token log-probs, entropy, top-1 flags, zero at ignored positions) that
gathers the hidden states of the positions whose label is not -100 and projects only those rows, in fp32 with autocast
off, in chunks recomputed on backward so peak memory stays one chunk of logits. The backbone still runs in the
run's precision (bf16 autocast where the hardware has it). Loss and gradients equal the full-head path in fp32
(tests/test_lm_head.py). The trainers keep TRL's code: `BioSFTTrainer` / `BioGRPOTrainer` install this head over the
one TRL added, and calls without `fused_lm_head` go to the model's own forward as before.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

CHUNK_ROWS = 2048  # rows of fp32 logits held at once: 2048 x 49,152 x 4 B = 400 MB for SmolLM2's vocabulary
FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def head_transform(logits: torch.Tensor, temperature: float = 1.0, logit_scale: float = 1.0,
                   softcap: float | None = None) -> torch.Tensor:
    """The logits a sampler sees: scaled, soft-capped, divided by the temperature (TRL's order)."""
    if logit_scale != 1.0:
        logits = logits * logit_scale
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    if temperature != 1.0:
        logits = logits / temperature
    return logits


def _rows(hidden, weight, bias, targets, temperature, logit_scale, softcap, fields):
    logits = head_transform(F.linear(hidden, weight, bias), temperature, logit_scale, softcap)
    logp = torch.log_softmax(logits, dim=-1)
    out = [logp.gather(-1, targets[:, None])[:, 0]]
    if "entropy" in fields:
        out.append(-(logp.exp() * logp).sum(-1))
    if "log_sum_sq_probs" in fields:
        out.append(torch.logsumexp(2 * logp, dim=-1).detach())
    if "mean_logits" in fields:
        out.append(logits.mean(-1).detach())
    if "is_top1" in fields:
        out.append((logits.argmax(-1) == targets).detach())
    return tuple(out)


def token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                   temperature: float = 1.0, outputs: Sequence[str] = ("log_probs",), logit_scale: float = 1.0,
                   softcap: float | None = None, chunk_rows: int = CHUNK_ROWS) -> dict[str, torch.Tensor]:
    """Per-row fields of the next-token distribution for `hidden` rows `[N, H]` and their `targets` `[N]`, in fp32."""
    fields = [f for f in FIELDS if f == "log_probs" or f in outputs]
    unknown = set(outputs) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown LM head outputs {sorted(unknown)}; available: {list(FIELDS)}")
    weight = weight.float()
    bias = None if bias is None else bias.float()
    chunks: list[tuple] = []
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        hidden = hidden.float()
        several = hidden.shape[0] > chunk_rows and torch.is_grad_enabled()
        for start in range(0, max(hidden.shape[0], 1), chunk_rows):
            args = (hidden[start:start + chunk_rows], weight, bias, targets[start:start + chunk_rows], temperature,
                    logit_scale, softcap, tuple(fields))
            # several chunks with gradients: keep none of their logits, recompute each chunk on backward
            chunks.append(checkpoint(_rows, *args, use_reentrant=False) if several else _rows(*args))
    return {name: torch.cat([c[i] for c in chunks]) for i, name in enumerate(fields)}


def text_head_settings(config) -> tuple[float, float | None]:
    """(logit scale, final soft-cap) of an LLM config, read as TRL reads them (1.0 / None for Llama, Qwen, SmolLM)."""
    text = config.get_text_config()
    scale = getattr(text, "logit_scale", None)
    if scale is None:
        scale = getattr(text, "output_multiplier", None)
    if scale is None:
        scale = getattr(text, "lm_head_multiplier", None)
    if scale is None and getattr(text, "logits_scaling", None) is not None:
        scale = text.logits_scaling if text.model_type == "hyperclovax" else 1 / text.logits_scaling
    return (1.0 if scale is None else float(scale)), getattr(text, "final_logit_softcapping", None)


def add_compact_lm_head(model, temperature: float = 1.0, outputs: Sequence[str] = ("log_probs",)) -> None:
    """Patch `model.forward` so that `fused_lm_head=True` projects only the labelled positions, in fp32.

    Same call and output as TRL's `add_fused_lm_head` (install it after TRL's; PEFT wrappers reach it through
    `get_base_model()`). Calls without `fused_lm_head`, and MoE calls that ask for router logits, go to the forward
    that was there before."""
    from trl.trainer.utils import FusedCausalLMOutput

    previous = model.forward
    logit_scale, softcap = text_head_settings(model.config)

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or kwargs.get("output_router_logits"):
            extra = {k: v for k, v in (("labels", labels), ("shift_labels", shift_labels),
                                       ("num_items_in_batch", num_items_in_batch)) if v is not None}
            if fused_lm_head:
                extra["fused_lm_head"] = True
            return previous(*args, **extra, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        head = self.get_output_embeddings()
        labels = labels.to(head.weight.device)
        mask = labels != -100
        rows = token_logprobs(hidden.to(head.weight.device)[mask], head.weight, head.bias, labels[mask],
                              temperature=temperature, outputs=outputs, logit_scale=logit_scale, softcap=softcap)
        # masked_scatter keeps an all-ignored batch connected to the graph (a differentiable zero loss)
        full = {name: rows[name].new_zeros(mask.shape).masked_scatter(mask, rows[name]) for name in rows}
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        loss = -full["log_probs"].sum() / count
        return FusedCausalLMOutput(loss=loss, label_mask=mask, **full)

    model.forward = types.MethodType(forward, model)


__all__ = ["add_compact_lm_head", "head_transform", "token_logprobs"]
