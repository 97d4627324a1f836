"""p7_eval_speedup: likelihood evaluation, examples per second batched (`evaluate_records`: 8 records a batch, each
prompt prefilled once, label continuations on its copied KV cache, fp32 head on the scored tokens) / one record at a
time (`predict_likelihood`: every label row through the whole model, full-vocabulary log-softmax at every position).

SmolLM2-135M + AntiBERTy (resampler, 16 tokens) as the quickstart composes them, 32 antibody_chain id_test records,
3 labels each, in the precision `bf16: auto` picks. The frozen encoder's features are in the memory cache for both arms
(a warm-up pass fills it), so the ratio is the scoring itself. Both arms must predict the same labels."""

from __future__ import annotations

import time

from bench.common import Result, autocast, precision, quickstart_model, task
from bench.p5_mfu import profile_step

RECORDS, BATCH = 32, 8


def run() -> Result:
    from bioreason.evaluation.scoring import evaluate_records, predict_likelihood, sample_split

    model, processor = quickstart_model()
    model.eval().enable_feature_cache()
    dataset, cells = task("antibody_chain")
    records = sample_split(dataset, "id_test", RECORDS, seed=0)
    with autocast():
        evaluate_records(model, processor, records, batch_size=BATCH, progress=False)  # warm-up, fills the cache
        start = time.perf_counter()
        batched = evaluate_records(model, processor, records, batch_size=BATCH, progress=False)["predictions"]
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        single = [predict_likelihood(model, processor, r, cells) for r in records]
        single_s = time.perf_counter() - start
        profile = profile_step(lambda: evaluate_records(model, processor, records, batch_size=BATCH, progress=False))
    agree = sum(p["prediction"] == s for p, s in zip(batched, single, strict=True)) / len(records)
    return Result(
        "p7_eval_speedup", single_s / batched_s, 5.0, "x",
        f"likelihood evaluation examples/s ({RECORDS} antibody_chain records x 3 labels, SmolLM2 + AntiBERTy, "
        f"{precision().name}), batched / one record at a time",
        {"batched_examples_per_s": round(RECORDS / batched_s, 2), "single_examples_per_s": round(RECORDS / single_s, 2),
         "batched_s": round(batched_s, 2), "single_s": round(single_s, 2), "prediction_agreement": agree,
         "batch_size": BATCH, "batched_profile_self_cpu_share": profile})
