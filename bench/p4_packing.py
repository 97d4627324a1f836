"""p4_packing_efficiency / p4_packing_speedup: SFT with the batch packed into one row (position ids restart per
example, no attention across examples) against padded batches, on the bundled benchmark whose lengths vary most
(peptide_activity with one LLM token per residue and reasoning traces); SmolLM2-135M + AntiBERTy (real weights).

Efficiency is the non-pad share of the tokens the model processes; the speedup compares real (non-pad) tokens per
second, each arm running the SFT recipe over the same examples."""

from __future__ import annotations

import gc
import statistics
import tempfile

import torch

from bench.common import Result, compose_bench, task
from bench.sft_timing import sft

EXAMPLES, BATCH = 64, 8
DATASET = "peptide_activity"


def token_counts(processor, packing: bool) -> tuple[int, int]:
    """(non-pad tokens, processed tokens) over the SFT batches of the first EXAMPLES training records."""
    from bioreason.training.collator import RecordCollator
    from bioreason.training.common import DataArguments, train_records

    dataset, _ = task(DATASET)
    records = list(train_records(dataset, DataArguments(dataset=f"benchmark:{DATASET}", max_train_examples=EXAMPLES)))
    collate = RecordCollator(processor, use_reasoning=True, packing=packing)
    real = total = 0
    for start in range(0, len(records), BATCH):
        batch = collate(records[start:start + BATCH])
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
        real += int(mask.sum())
        total += mask.numel()
    return real, total


def run() -> Result:
    from bioreason.encoders import load_encoder

    model, processor = compose_bench({"protein": load_encoder("antiberty")}, projector="linear")
    arms = {}
    for arm, packing in (("padded", False), ("packed", True)):
        real, total = token_counts(processor, packing)
        with tempfile.TemporaryDirectory() as out:
            timing = sft(model, processor, DATASET, EXAMPLES, 1, BATCH, out, packing=packing, use_reasoning=True)
        seconds = sum(timing["steps"])
        arms[arm] = {"efficiency": real / total, "tokens_per_s": real / seconds, "real_tokens": real,
                     "processed_tokens": total, "median_step_s": statistics.median(timing["steps"])}
        del timing
        gc.collect()
    padded, packed = arms["padded"], arms["packed"]
    details = {arm: {k: round(v, 3) if isinstance(v, float) else v for k, v in a.items()} for arm, a in arms.items()}
    return [
        Result("p4_packing_efficiency", packed["efficiency"], 0.95, "non-pad share",
               f"non-pad share of processed tokens, packed SFT batches ({DATASET}, batch {BATCH})", details),
        Result("p4_packing_speedup", packed["tokens_per_s"] / padded["tokens_per_s"], 1.5, "x",
               f"real tokens/s in SFT, packed / padded ({DATASET}, batch {BATCH}, sdpa on CPU)", details),
    ]
