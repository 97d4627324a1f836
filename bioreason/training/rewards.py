"""GRPO rewards: TRL-style functions `f(completions, **columns) -> list[float]`, in the `REWARDS` registry.

Dataset columns (`answer`, `label_set`, ...) arrive as keyword lists, one entry per completion. Completions are plain
strings or, for conversational prompts, `[{"role": "assistant", "content": ...}]`.

`correctness` is strict on purpose. The substring-match reward used earlier in this field pays for "heavy, kappa or
lambda", "not kappa", or a label mentioned anywhere in the text; here the completion earns 1 only when it holds
exactly one `<answer>` block, nothing follows it, and the block's content is exactly one allowed label equal to the
gold answer. All parsing goes through `bioreason.data.chat.parse_answer`, which evaluation uses too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bioreason.data.chat import normalize_label, parse_answer

REWARDS: dict[str, Callable[..., list[float]]] = {}


def register_reward(name: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        REWARDS[name] = fn
        return fn

    return wrap


def get_reward(name: str) -> Callable:
    if name not in REWARDS:
        raise ValueError(f"Unknown reward {name!r}; available: {sorted(REWARDS)}")
    return REWARDS[name]


def completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def _answer_block(text: str) -> str | None:
    """The content of the single `<answer>` block when nothing but whitespace follows it, else None."""
    parsed = parse_answer(text)
    if parsed.answer is None or text[text.rfind("</answer>") + len("</answer>"):].strip():
        return None
    return parsed.answer


@register_reward("correctness")
def correctness(completions, answer, label_set=None, **_) -> list[float]:
    rewards = []
    for i, completion in enumerate(completions):
        block = _answer_block(completion_text(completion))
        allowed = {normalize_label(x) for x in (label_set[i] if label_set else [])}
        if block is None:
            rewards.append(0.0)
            continue
        given = normalize_label(block)
        ok = given == normalize_label(answer[i]) and (not allowed or given in allowed)
        rewards.append(1.0 if ok else 0.0)
    return rewards


@register_reward("format")
def format_reward(completions, **_) -> list[float]:
    """1 for `<think>...</think><answer>...</answer>` and nothing after; 0.5 for an answer block alone."""
    out = []
    for completion in completions:
        text = completion_text(completion)
        parsed = parse_answer(text)
        out.append(1.0 if parsed.well_formed else 0.5 if _answer_block(text) is not None else 0.0)
    return out


def _labels(text: str) -> set[str]:
    return {normalize_label(x) for x in re.split(r"[,;\n]", text) if normalize_label(x)}


@register_reward("multilabel_f1")
def multilabel_f1(completions, answer, **_) -> list[float]:
    """F1 between the predicted and gold label sets (comma / semicolon separated), for GO-style tasks."""
    out = []
    for i, completion in enumerate(completions):
        block = _answer_block(completion_text(completion))
        gold = _labels(answer[i]) if isinstance(answer[i], str) else {normalize_label(x) for x in answer[i]}
        pred = _labels(block) if block else set()
        tp = len(pred & gold)
        out.append(0.0 if tp == 0 else 2 * tp / (len(pred) + len(gold)))
    return out


@register_reward("length")
def length_reward(completions, target_chars: int = 400, **_) -> list[float]:
    """1 up to `target_chars`, then linearly down to 0 at twice that: discourages rambling rollouts."""
    out = []
    for completion in completions:
        n = len(completion_text(completion))
        out.append(1.0 if n <= target_chars else max(0.0, 1.0 - (n - target_chars) / target_chars))
    return out


__all__ = ["REWARDS", "completion_text", "correctness", "format_reward", "get_reward", "length_reward",
           "multilabel_f1", "register_reward"]
