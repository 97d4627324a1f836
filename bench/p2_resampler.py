"""p2_resampler_speedup: SFT step time on 1 kb DNA, one LLM token per encoder position (linear projector) / a
resampler with K=32 queries; with the ID accuracy each reaches on the bundled 1 kb DNA benchmark.

SmolLM2-135M + a Nucleotide-Transformer-500M-shaped encoder (6-mer tokens: 167 positions + CLS per 1 kb) on
jaspar_tf_class_1kb. The frozen encoder's features are computed once into a shared cache before either arm trains, so
the step times compare the projector and the decoder, which is what the token count changes. The arms run twice, in
alternating order (linear, resampler, resampler, linear); each arm's step time is the median over both runs' steps,
and its accuracy is scored after its first run."""

from __future__ import annotations

import copy
import gc
import statistics
import tempfile

import torch

from bench.common import Result, alternating, autocast, compose_bench, nucleotide_transformer_500m_shape, task
from bench.sft_timing import sft

EXAMPLES, BATCH, EVAL = 48, 8, 24
DATASET = "jaspar_tf_class_1kb"


def warm_cache(model, processor, records, cache_dir: str) -> None:
    """Encode every record once (in the precision training runs in) into the disk cache both arms read."""
    from bioreason.data.chat import modality_inputs

    cache = model.enable_feature_cache(cache_dir)
    encoder = model.model.encoders["dna"]
    featurizer = processor.featurizer("dna")
    for start in range(0, len(records), BATCH):
        items = [s for r in records[start:start + BATCH] for s in modality_inputs(r)["dna"]]
        batch = featurizer(items)
        with torch.no_grad(), autocast():
            cache.encode(encoder, batch["values"], batch["mask"].bool())
    model.disable_feature_cache()


def run() -> Result:
    from bioreason.evaluation.scoring import evaluate_records, sample_split
    from bioreason.training.arguments import DataArguments
    from bioreason.training.task import train_records

    encoder = nucleotide_transformer_500m_shape()
    dataset, _ = task(DATASET)
    train = list(train_records(dataset, DataArguments(dataset=f"benchmark:{DATASET}", max_train_examples=EXAMPLES)))
    test = sample_split(dataset, "id_test", EVAL, seed=0)
    projectors = {"linear": "linear", "resampler": {"type": "resampler", "options": {"num_queries": 32}}}
    arms: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in alternating(tuple(projectors)):
            torch.manual_seed(0)
            model, processor = compose_bench({"dna": copy.deepcopy(encoder)}, projector=projectors[name])
            if not arms:  # the first run fills the cache both arms read
                warm_cache(model, processor, train + list(test), cache_dir)
            with tempfile.TemporaryDirectory() as out:
                timing = sft(model, processor, DATASET, EXAMPLES, 1, BATCH, out, feature_cache="disk",
                             cache_dir=cache_dir)
            trained = timing["model"]
            if name not in arms:
                with autocast():
                    metrics = evaluate_records(trained.get_base_model(), processor, test, mode="likelihood")
                batch = processor(text=["<dna>"], dna=[train[0]["dna"][0]])
                arms[name] = {"steps": [], "id_accuracy": metrics["accuracy"], "id_macro_f1": metrics["macro_f1"],
                              "dna_tokens_per_example": int(
                                  (batch["input_ids"] == model.config.modalities["dna"]["pad_token_id"]).sum())}
            arms[name]["steps"] += timing["steps"]
            del model, trained, timing
            gc.collect()
    for arm in arms.values():
        arm["step_s"] = statistics.median(arm.pop("steps"))
    linear, resampler = arms["linear"], arms["resampler"]
    return Result(
        "p2_resampler_speedup", linear["step_s"] / resampler["step_s"], 5.0, "x",
        f"SFT step time on {DATASET} (batch {BATCH}), per-position linear / resampler K=32",
        {arm: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in a.items()} for arm, a in arms.items()}
        | {"id_examples": len(test), "train_examples": EXAMPLES, "order": alternating(tuple(projectors))})
