"""p5_cpu_mfu: achieved training FLOP/s of a SmolLM2-135M step over the bf16 matmul peak measured in the same run.

FLOPs of a step: 6 x (matmul parameters, lm_head included) x tokens + the attention scores (12 x layers x width x
sequence length per token, the PaLM accounting). The step is the one the SFT recipe runs: forward through TRL's fused,
chunked LM head (what SFTTrainer adds; it accumulates the head's gradient in float32), backward, AdamW; full
fine-tuning under bf16 autocast (`bf16: true`); it is profiled to show where the time goes. Measured next to it: the
same step with one cross-entropy over bf16 logits (faster here, but it trained the quickstart to a worse model; see
recipes/sft.py). (A step with bf16 weights instead of autocast measured no faster and is not repeated here.)"""

from __future__ import annotations

import torch
from torch import nn

from bench.common import Result, smollm, timed

BATCH, SEQ = 8, 512


def matmul_peak(sizes=(1024, 2048, 4096)) -> dict[str, float]:
    """Best bf16 (and fp32) GFLOP/s over square matmuls of these sizes."""
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        best = 0.0
        for n in sizes:
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            reps = max(3, int(4e10 / n**3)) if dtype == torch.bfloat16 else 3
            seconds = timed(lambda a=a, b=b, reps=reps: [a @ b for _ in range(reps)], repeats=3, warmup=1) / reps
            best = max(best, 2 * n**3 / seconds / 1e9)
        out[str(dtype).removeprefix("torch.")] = best
    return out


def step_flops(model, tokens: int, seq: int) -> float:
    cfg = model.config
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return 6 * matmul * tokens + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq * tokens


def make_step(model, autocast: bool, fused: bool = False):
    from trl.trainer.utils import add_fused_lm_head

    if fused:
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # what SFTTrainer adds
    extra = {"fused_lm_head": True} if fused else {}
    model.train()
    model.config.use_cache = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids, **extra).loss
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
    peak = matmul_peak()
    model, _ = smollm(torch.float32)
    flops = step_flops(model, BATCH * SEQ, SEQ)
    step = make_step(model, autocast=True, fused=True)
    autocast_s = timed(step, repeats=2, warmup=1)
    profile = profile_step(step)
    del model, step
    model, _ = smollm(torch.float32)  # without the fused-head patch
    plain_s = timed(make_step(model, autocast=True), repeats=1, warmup=1)
    achieved = flops / autocast_s / 1e9
    return Result(
        "p5_cpu_mfu", achieved / peak["bfloat16"], 0.35, "fraction of peak",
        f"SmolLM2-135M full training step as the SFT recipe runs it ({BATCH}x{SEQ} tokens, TRL fused head, AdamW, "
        "bf16 autocast) FLOP/s / bf16 matmul peak",
        {"bf16_matmul_peak_gflops": round(peak["bfloat16"], 1), "fp32_matmul_peak_gflops": round(peak["float32"], 1),
         "step_tflop": round(flops / 1e12, 3), "autocast_step_s": round(autocast_s, 2),
         "autocast_gflops": round(achieved, 1), "plain_cross_entropy_step_s": round(plain_s, 2),
         "plain_cross_entropy_mfu": round(flops / plain_s / 1e9 / peak["bfloat16"], 3),
         "autocast_step_profile_self_cpu_share": profile})
