"""p5_cpu_mfu: achieved training FLOP/s of a SmolLM2-135M SFT step over the matmul peak of the precision the recipes
use on this machine (`bf16: auto`: the bf16 peak where the CPU has AMX / AVX512-BF16, the fp32 peak elsewhere), both
measured in the same run.

The step is the one the SFT recipe runs: full fine-tuning, the loss on the assistant turn only (the last ANSWER tokens
of each row, ~6% of the tokens as in the quickstart), the LM head through `bioreason.model.lm_head` (fp32, labelled rows
only), backward, AdamW. FLOPs count what the step must do: 6 x backbone matmul parameters x tokens + 6 x head
parameters x labelled tokens + the attention scores (12 x layers x width x sequence length per token, the PaLM
accounting). Measured next to it: the same step through TRL's fused head, which on CPU projects every position."""

from __future__ import annotations

import torch
from torch import nn

from bench.common import Result, autocast, precision, smollm, timed

BATCH, SEQ, ANSWER = 8, 512, 32


def matmul_peak(sizes=(1024, 2048, 4096)) -> dict[str, float]:
    """Best GFLOP/s over square matmuls of these sizes, per dtype (bf16 only where it is native: emulated bf16 takes
    minutes at these sizes and no recipe uses it there)."""
    out = {}
    dtypes = (torch.bfloat16, torch.float32) if precision().bf16 else (torch.float32,)
    for dtype in dtypes:
        best = 0.0
        for n in sizes:
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            reps = max(3, int(4e10 / n**3)) if dtype == torch.bfloat16 else 3
            seconds = timed(lambda a=a, b=b, reps=reps: [a @ b for _ in range(reps)], repeats=3, warmup=1) / reps
            best = max(best, 2 * n**3 / seconds / 1e9)
        out[str(dtype).removeprefix("torch.")] = best
    return out


def step_flops(model, tokens: int, labelled: int, seq: int) -> float:
    cfg = model.config
    head = model.get_output_embeddings().weight.numel()
    backbone = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)) - head
    return 6 * backbone * tokens + 6 * head * labelled + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq * tokens


def make_step(model, head: str):
    """One SFT training step of `model` with `head` = "compact" (ours) or "trl" (TRL's fused head)."""
    from trl.trainer.utils import add_fused_lm_head

    from bioreason.model.lm_head import add_compact_lm_head

    if head == "compact":
        add_compact_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    else:
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # what SFTTrainer adds
    model.train()
    model.config.use_cache = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :-ANSWER] = -100

    def step():
        with autocast():
            loss = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def profile_step(step) -> dict[str, float]:
    """Share of the step's CPU time per operator (the top ones), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {e.key: round(e.self_cpu_time_total / total, 3) for e in events[:8]}


def run() -> Result:
    chosen = precision()
    peak = matmul_peak()
    used_peak = peak["bfloat16" if chosen.bf16 else "float32"]
    model, _ = smollm(torch.float32)
    flops = step_flops(model, BATCH * SEQ, BATCH * (ANSWER - 1), SEQ)
    step = make_step(model, "compact")
    step_s = timed(step, repeats=2, warmup=1)
    profile = profile_step(step)
    del model, step
    model, _ = smollm(torch.float32)
    trl_s = timed(make_step(model, "trl"), repeats=1, warmup=1)
    achieved = flops / step_s / 1e9
    return Result(
        "p5_cpu_mfu", achieved / used_peak, 0.35, "fraction of peak",
        f"SmolLM2-135M full SFT step ({BATCH}x{SEQ} tokens, loss on the last {ANSWER} of each row, fp32 head on "
        f"those rows, AdamW, {chosen.name}) FLOP/s / {chosen.name.split()[0]} matmul peak",
        {"precision": chosen.as_dict(), "matmul_peak_gflops": {k: round(v, 1) for k, v in peak.items()},
         "step_tflop": round(flops / 1e12, 3), "step_s": round(step_s, 2), "achieved_gflops": round(achieved, 1),
         "trl_fused_head_step_s": round(trl_s, 2), "compact_head_speedup": round(trl_s / step_s, 2),
         "step_profile_self_cpu_share": profile})
