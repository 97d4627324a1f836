"""p9_reliance_cost: one reliance pass (every record scored with another record's input, as `reliance_scores` does)
over the time of the scoring pass on the real inputs; issue 26's ceiling is 1.2x.

Why: `bioreason eval` on antibody_chain spent 2:18 on the reliance pass of id_test where scoring took 0:18. A swapped
input is the same set of inputs in another order, so with the frozen encoder's feature cache and the batched scorer a
reliance pass should cost what scoring costs. SmolLM2-135M + AntiBERTy (resampler, 16 tokens) as the quickstart
composes them, 64 antibody_chain id_test records, in the precision `bf16: auto` picks, scored as `evaluate_model`
scores them (`model_predictor`). Both arms are warmed (the scoring pass fills the feature cache that `bioreason eval`
also fills before its reliance passes), then run twice in alternating order; each arm's time is the median."""

from __future__ import annotations

import statistics
import time

from bench.common import Result, alternating, autocast, precision, quickstart_model, task

RECORDS = 64


def run() -> Result:
    from bioreason.evaluation.baselines import derangement, model_predictor, with_inputs_of
    from bioreason.evaluation.scoring import sample_split

    model, processor = quickstart_model()
    model.eval().enable_feature_cache()
    dataset, cells = task("antibody_chain")
    records = sample_split(dataset, "id_test", RECORDS, seed=0)
    swapped = with_inputs_of(records, derangement(len(records), 0))
    predict = model_predictor(model, processor, cells=cells)
    arms = {"scoring": lambda: predict(records), "reliance": lambda: predict(swapped)}
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    with autocast():
        for arm in arms.values():  # warm-up; the scoring pass fills the feature cache, as in `bioreason eval`
            arm()
        for arm in alternating(tuple(arms)):
            start = time.perf_counter()
            arms[arm]()
            seconds[arm].append(time.perf_counter() - start)
    scoring_s, reliance_s = (statistics.median(seconds[a]) for a in ("scoring", "reliance"))
    return Result(
        "p9_reliance_cost", reliance_s / scoring_s, 1.2, "x",
        f"one reliance pass / the scoring pass ({RECORDS} antibody_chain records, SmolLM2 + AntiBERTy, "
        f"{precision().name})",
        {"scoring_s": [round(s, 2) for s in seconds["scoring"]],
         "reliance_s": [round(s, 2) for s in seconds["reliance"]], "order": alternating(tuple(arms))},
        lower_is_better=True)
