"""p1_cache_speedup: wall time of SFT epoch 2, without / with the frozen-encoder feature cache.

SmolLM2-135M + an ESM2-650M-shaped protein encoder (the study's encoder; it costs more than the decoder's LoRA step)
on the antibody_chain benchmark; LoRA r16 on the LLM, resampler projector trained in full, `bf16: auto`. Both arms run
the SFT recipe for two epochs from the same seed; the cached arm fills the cache in epoch 1. The arms run twice, in
alternating order (off, memory, memory, off); each arm's figure is the mean of its two runs."""

from __future__ import annotations

import gc
import statistics
import tempfile

from bench.common import Result, alternating, compose_bench, esm2_650m_shape
from bench.sft_timing import sft

EXAMPLES, BATCH = 40, 8


def build():
    return compose_bench({"protein": esm2_650m_shape()}, projector={"type": "resampler",
                                                                    "options": {"num_queries": 32}})


def run(model=None, processor=None) -> Result:
    if model is None:
        model, processor = build()
    runs: dict[str, list[dict]] = {"off": [], "memory": []}
    for arm in alternating(("off", "memory")):
        with tempfile.TemporaryDirectory() as out:
            timing = sft(model, processor, "antibody_chain", EXAMPLES, 2, BATCH, out, feature_cache=arm)
        timing.pop("model")
        runs[arm].append(timing)
        gc.collect()
    epochs = {arm: [statistics.mean(t["epochs"][i] for t in timings) for i in range(2)]
              for arm, timings in runs.items()}
    plain, cached = epochs["off"], epochs["memory"]
    encoder = sum(p.numel() for p in model.model.encoders.parameters())
    decoder = sum(p.numel() for p in model.model.language_model.parameters())
    return Result(
        "p1_cache_speedup", plain[1] / cached[1], 3.0, "x",
        f"SFT epoch 2 wall time ({EXAMPLES} antibody_chain examples, batch {BATCH}), uncached / cached",
        {"encoder_params_m": round(encoder / 1e6), "decoder_params_m": round(decoder / 1e6),
         # epoch 2 without the encoder (cached) is the decoder's share; the difference is what the encoder cost
         "encoder_s_per_epoch": round(plain[1] - cached[1], 1), "decoder_s_per_epoch": round(cached[1], 1),
         "uncached_epoch_s": [[round(x, 1) for x in t["epochs"]] for t in runs["off"]],
         "cached_epoch_s": [[round(x, 1) for x in t["epochs"]] for t in runs["memory"]],
         "order": alternating(("off", "memory")), "cache": runs["memory"][-1]["cache"]})
