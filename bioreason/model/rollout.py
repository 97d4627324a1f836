"""Shared prompts in GRPO: a group's G samples start from one prompt, so its encoding and its prefill are computed once.

TRL repeats every prompt G times in the batch it generates from and scores. Two places do G times the same work:

- generation: `generate_with_shared_prefill` runs the prompt (encoders, projectors and the decoder's KV prefill) once
  per unique row, copies the KV cache to the G rows, and lets `generate` continue from the last prompt token;
- the log-prob passes (policy, old policy, reference): `shared_prefix_logps` runs the prompt once per unique row with
  gradients, expands its KV cache to the rows, and runs only the completions on top. The loss and its gradients are
  those of the full pass (the expansion is an index_select, so each prompt's gradient sums over its samples).

Both fall back to the plain path when no two rows share a prompt. The results equal the plain path's up to
floating-point reassociation (tests/test_rollout.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch

from bioreason.model.feature_cache import tensor_bytes


def prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, modality: dict[str, torch.Tensor],
                  flat_items: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]] | None:
    """`(unique_rows, inverse, unique_modality)` when at least two rows hold the same prompt (token ids, mask and
    modality items), else None. `flat_items`: modality tensors are `[rows * items, ...]` (what the model takes) rather
    than row-aligned `[rows, items, ...]`."""
    rows = prompt_ids.shape[0]
    per_row = {}
    for key, value in modality.items():
        if value is None:
            continue
        if flat_items:
            if value.shape[0] % rows:
                return None  # items are not evenly spread over rows: no safe row grouping
            value = value.reshape(rows, -1, *value.shape[1:])
        per_row[key] = value
    index: dict[str, int] = {}
    first, inverse = [], []
    for i in range(rows):
        digest = hashlib.blake2b(digest_size=16)
        digest.update(tensor_bytes(prompt_ids[i]))
        digest.update(tensor_bytes(prompt_mask[i].to(torch.uint8)))
        for key in sorted(per_row):
            digest.update(key.encode())
            digest.update(tensor_bytes(per_row[key][i]))
        key = digest.hexdigest()
        if key not in index:
            index[key] = len(first)
            first.append(i)
        inverse.append(index[key])
    if len(first) == rows:
        return None
    unique = torch.tensor(first, device=prompt_ids.device)
    unique_modality = {}
    for key, value in per_row.items():
        value = value.index_select(0, unique.to(value.device))
        unique_modality[key] = value.flatten(0, 1) if flat_items else value
    return unique, torch.tensor(inverse, device=prompt_ids.device), unique_modality


def items_evenly_spread(model, input_ids: torch.Tensor, modality: dict[str, torch.Tensor]) -> bool:
    """Whether every row holds the same number of items of each modality (counted by their start tokens), which is
    what attributing the flat item tensors to rows by position needs."""
    for key, value in modality.items():
        if not key.endswith("_values"):
            continue
        start = model.config.modalities[key.removesuffix("_values")]["start_token_id"]
        per_row = (input_ids == start).sum(-1)
        if bool((per_row != per_row[0]).any()) or int(per_row[0]) * input_ids.shape[0] != value.shape[0]:
            return False
    return True


def generation_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """The position ids `generate` derives from a left-padded attention mask."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def generate_with_shared_prefill(model, generate: Callable[..., Any], input_ids: torch.Tensor,
                                 attention_mask: torch.Tensor | None, modality: dict[str, torch.Tensor],
                                 **kwargs: Any):
    """`generate(...)` where each unique prompt is prefilled once; all but its last token go into the KV cache."""
    groups = None
    config = kwargs.get("generation_config") or model.generation_config
    if (attention_mask is not None and input_ids.shape[1] > 1 and kwargs.get("cache") is None
            and (kwargs.get("num_return_sequences") or config.num_return_sequences or 1) == 1
            and (kwargs.get("num_beams") or config.num_beams or 1) == 1
            and items_evenly_spread(model, input_ids, modality)):
        groups = prompt_groups(input_ids, attention_mask, modality)
    if groups is None:
        return generate(input_ids=input_ids, attention_mask=attention_mask, **modality, **kwargs)
    unique, inverse, unique_modality = groups
    ids, mask = input_ids.index_select(0, unique), attention_mask.index_select(0, unique)
    with torch.no_grad():
        out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                    position_ids=generation_position_ids(mask)[:, :-1], use_cache=True, logits_to_keep=1,
                    **unique_modality)
    cache = out.cache
    cache.batch_select_indices(inverse)
    return generate(input_ids=input_ids, attention_mask=attention_mask, cache=cache, **kwargs)


def shared_prefix_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                        modality: dict[str, torch.Tensor]):
    """Per-token log-probs (and entropies) of the last `logits_to_keep` tokens, as TRL's fused-head pass returns
    them, with the prompt (everything before those tokens but its last one) computed once per unique row.

    Returns the fused-head output, or None when no prompt is shared (the caller then runs the plain pass).
    Positions follow the plain pass: `arange` over the padded row, as a forward without `position_ids` uses."""
    prompt_len = input_ids.shape[1] - logits_to_keep
    if prompt_len < 2:
        return None
    groups = prompt_groups(input_ids[:, :prompt_len], attention_mask[:, :prompt_len], modality, flat_items=False)
    if groups is None:
        return None
    unique, inverse, unique_modality = groups
    prefix = prompt_len - 1
    prefix_out = model(input_ids=input_ids.index_select(0, unique)[:, :prefix],
                       attention_mask=attention_mask.index_select(0, unique)[:, :prefix],
                       use_cache=True, logits_to_keep=1,
                       **{k: v.flatten(0, 1) for k, v in unique_modality.items()})
    cache = prefix_out.cache
    cache.batch_select_indices(inverse)
    suffix = input_ids[:, prefix:]
    labels = suffix.masked_fill(attention_mask[:, prefix:] == 0, -100)
    labels[:, :1] = -100  # the last prompt token is input only
    rows = input_ids.shape[0]
    positions = torch.arange(prefix, input_ids.shape[1], device=input_ids.device).expand(rows, -1)
    return model(input_ids=suffix, attention_mask=attention_mask, position_ids=positions, cache=cache,
                 labels=labels, fused_lm_head=True)
