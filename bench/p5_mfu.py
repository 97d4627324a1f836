"""p5_cpu_mfu: achieved training FLOP/s of a SmolLM2-135M step over the bf16 matmul peak measured in the same run.

FLOPs of a step: 6 x (matmul parameters, lm_head included) x tokens + the attention scores (12 x layers x width x
sequence length per token, the PaLM accounting). The step is forward + backward + AdamW, full fine-tuning, under bf16
autocast as the recipes run it (`bf16: true`); a bf16-weights step is measured next to it."""

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


def train_step_seconds(model, autocast: bool, steps: int = 3) -> float:
    model.train()
    model.config.use_cache = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed(step, repeats=steps, warmup=1)


def run() -> Result:
    peak = matmul_peak()
    model, _ = smollm(torch.float32)
    flops = step_flops(model, BATCH * SEQ, SEQ)
    autocast_s = train_step_seconds(model, autocast=True)
    fp32_s = train_step_seconds(model, autocast=False, steps=1)
    del model
    model, _ = smollm(torch.bfloat16)
    bf16_s = train_step_seconds(model, autocast=False)
    achieved = flops / autocast_s / 1e9
    return Result(
        "p5_cpu_mfu", achieved / peak["bfloat16"], 0.35, "fraction of peak",
        f"SmolLM2-135M training step ({BATCH}x{SEQ} tokens, AdamW, bf16 autocast) FLOP/s / bf16 matmul peak",
        {"bf16_matmul_peak_gflops": round(peak["bfloat16"], 1), "fp32_matmul_peak_gflops": round(peak["float32"], 1),
         "step_tflop": round(flops / 1e12, 3), "autocast_step_s": round(autocast_s, 2),
         "autocast_gflops": round(achieved, 1), "bf16_weights_step_s": round(bf16_s, 2),
         "bf16_weights_mfu": round(flops / bf16_s / 1e9 / peak["bfloat16"], 3), "fp32_step_s": round(fp32_s, 2),
         "autocast_speedup_over_fp32": round(fp32_s / autocast_s, 2)})
