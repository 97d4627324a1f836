"""p4_packing_efficiency / p4_packing_speedup: SFT with the batch packed into one row (position ids restart per
example, no attention across examples) against padded batches, on the bundled benchmark whose lengths vary most
(peptide_activity with one LLM token per residue and reasoning traces); SmolLM2-135M + AntiBERTy (real weights).

Efficiency is the share of the processed positions that belong to an example: each example's own token count (the
collator on that example alone) over every position of the batches the model runs. It is measured for both arms,
so the padded arm's figure shows what packing removes. The speedup compares example tokens per second, each arm
running the SFT recipe over the same examples."""

from __future__ import annotations

import gc
import statistics
import tempfile

from bench.common import Result, compose_bench, task
from bench.sft_timing import sft

EXAMPLES, BATCH = 64, 8
DATASET = "peptide_activity"


def token_counts(collate, records: list[dict], batch_size: int) -> tuple[int, int]:
    """(example tokens, processed tokens) over the batches of `records`: each example's tokens are counted from the
    collator run on that example alone (one row, nothing to pad), the processed ones are every position of the batch
    the model runs, padding included. Neither reads the batch's attention mask, which a packed batch does not carry."""
    real = sum(int(collate([record])["input_ids"].numel()) for record in records)
    total = sum(int(collate(records[start:start + batch_size])["input_ids"].numel())
                for start in range(0, len(records), batch_size))
    return real, total


def records() -> list[dict]:
    from bioreason.training.arguments import DataArguments
    from bioreason.training.task import train_records

    dataset, _ = task(DATASET)
    return list(train_records(dataset, DataArguments(dataset=f"benchmark:{DATASET}", max_train_examples=EXAMPLES)))


def run() -> Result:
    from bioreason.encoders import load_encoder
    from bioreason.training.collator import RecordCollator

    model, processor = compose_bench({"protein": load_encoder("antiberty")}, projector="linear")
    examples, arms = records(), {}
    for arm, packing in (("padded", False), ("packed", True)):
        real, total = token_counts(RecordCollator(processor, use_reasoning=True, packing=packing), examples, BATCH)
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
               f"example tokens / processed tokens, packed SFT batches ({DATASET}, batch {BATCH}); padded batches: "
               f"{padded['efficiency']:.3f}", details),
        Result("p4_packing_speedup", packed["tokens_per_s"] / padded["tokens_per_s"], 1.5, "x",
               f"real tokens/s in SFT, packed / padded ({DATASET}, batch {BATCH}, sdpa on CPU)", details),
    ]
