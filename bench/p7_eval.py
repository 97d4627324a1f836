"""p7_eval_speedup: likelihood evaluation, examples per second batched (`evaluate_records`: 8 records a batch, each
prompt prefilled once, label continuations on its copied KV cache, fp32 head on the scored tokens) / one record at a
time (`predict_likelihood`: every label row through the whole model, full-vocabulary log-softmax at every position).

SmolLM2-135M + AntiBERTy (resampler, 16 tokens) as the quickstart composes them, 32 antibody_chain id_test records,
3 labels each, in the precision `bf16: auto` picks. Both arms are warmed first (the batched pass also fills the
frozen encoder's memory cache, which both arms then read, so the ratio is the scoring itself), then run twice in
alternating order (batched, single, single, batched); each arm's time is the median of its runs. The arms must
predict the same label for every record, else the figure is not reported."""

from __future__ import annotations

import statistics
import time

from bench.common import Result, alternating, autocast, precision, quickstart_model, task
from bench.p5_mfu import profile_step

RECORDS, BATCH = 32, 8


def agreeing(batched: list[str], single: list[str]) -> None:
    """Both arms score the same records with the same model: a label they disagree on means one of them scores
    something else, and its time would not compare the same work."""
    if len(batched) != len(single):
        raise RuntimeError(f"p7 arms scored different records: {len(batched)} batched, {len(single)} single")
    differ = [i for i, (a, b) in enumerate(zip(batched, single, strict=True)) if a != b]
    if differ:
        raise RuntimeError(f"p7 arms disagree on {len(differ)} of {len(batched)} records (first: record {differ[0]}, "
                           f"batched {batched[differ[0]]!r}, single {single[differ[0]]!r})")


def run() -> Result:
    from bioreason.evaluation.scoring import evaluate_records, predict_likelihood, sample_split

    model, processor = quickstart_model()
    model.eval().enable_feature_cache()
    dataset, cells = task("antibody_chain")
    records = sample_split(dataset, "id_test", RECORDS, seed=0)
    arms = {
        "batched": lambda: [p["prediction"] for p in evaluate_records(
            model, processor, records, batch_size=BATCH, progress=False)["predictions"]],
        "single": lambda: [predict_likelihood(model, processor, r, cells) for r in records],
    }
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    with autocast():
        arms["batched"]()  # warm-up: fills the feature cache
        for record in records[:BATCH]:  # warm-up of the other arm
            predict_likelihood(model, processor, record, cells)
        predictions = {}
        for arm in alternating(tuple(arms)):
            start = time.perf_counter()
            predictions[arm] = arms[arm]()
            seconds[arm].append(time.perf_counter() - start)
            if len(predictions) == len(arms):
                agreeing(predictions["batched"], predictions["single"])
        profile = profile_step(arms["batched"])
    batched_s, single_s = (statistics.median(seconds[a]) for a in ("batched", "single"))
    return Result(
        "p7_eval_speedup", single_s / batched_s, 5.0, "x",
        f"likelihood evaluation examples/s ({RECORDS} antibody_chain records x 3 labels, SmolLM2 + AntiBERTy, "
        f"{precision().name}), batched / one record at a time",
        {"batched_examples_per_s": round(RECORDS / batched_s, 2), "single_examples_per_s": round(RECORDS / single_s, 2),
         "batched_s": [round(s, 2) for s in seconds["batched"]], "single_s": [round(s, 2) for s in seconds["single"]],
         "order": alternating(tuple(arms)), "batch_size": BATCH, "batched_profile_self_cpu_share": profile})
