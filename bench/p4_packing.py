"""p4_packing_speedup: SFT with the batch packed into one row (position ids restart per example, no attention across
examples) against padded batches, on the bundled benchmark whose lengths vary most (peptide_activity with one LLM token
per residue and reasoning traces); SmolLM2-135M + AntiBERTy (real weights).

The speedup compares example tokens per second, each arm running the SFT recipe over the same examples, twice, in
alternating order (padded, packed, packed, padded). Beside it, the padded share of the padded arm: the positions of
its batches that hold no example token, which is what packing can remove (a packed batch holds nothing else, by
construction of the collator; the run checks it rather than reporting it as a figure)."""

from __future__ import annotations

import gc
import statistics
import tempfile

from bench.common import Result, alternating, compose_bench, task
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


def padded_share(real: int, total: int) -> float:
    """The share of processed positions that hold no example token."""
    if not 0 < real <= total:
        raise ValueError(f"example tokens ({real}) must be positive and at most the processed tokens ({total})")
    return (total - real) / total


def records() -> list[dict]:
    from bioreason.training.arguments import DataArguments
    from bioreason.training.task import train_records

    dataset, _ = task(DATASET)
    return list(train_records(dataset, DataArguments(dataset=f"benchmark:{DATASET}", max_train_examples=EXAMPLES)))


def run() -> Result:
    from bioreason.encoders import load_encoder
    from bioreason.training.collator import RecordCollator

    model, processor = compose_bench({"protein": load_encoder("antiberty")}, projector="linear")
    examples, packing = records(), {"padded": False, "packed": True}
    counts = {arm: token_counts(RecordCollator(processor, use_reasoning=True, packing=packed), examples, BATCH)
              for arm, packed in packing.items()}
    if counts["packed"][0] != counts["packed"][1] or counts["packed"][0] != counts["padded"][0]:
        raise RuntimeError(f"p4: packed batches should hold the padded arm's example tokens and nothing else: {counts}")
    steps: dict[str, list[float]] = {arm: [] for arm in packing}
    for arm in alternating(tuple(packing)):
        with tempfile.TemporaryDirectory() as out:
            timing = sft(model, processor, DATASET, EXAMPLES, 1, BATCH, out, packing=packing[arm],
                         use_reasoning=True)
        steps[arm] += timing["steps"]
        del timing
        gc.collect()
    rounds = len(alternating(tuple(packing))) // len(packing)
    real = counts["padded"][0]
    arms = {arm: {"tokens_per_s": real * rounds / sum(steps[arm]), "processed_tokens": counts[arm][1],
                  "median_step_s": statistics.median(steps[arm]), "steps": len(steps[arm])} for arm in packing}
    share = padded_share(*counts["padded"])
    details = {arm: {k: round(v, 3) if isinstance(v, float) else v for k, v in a.items()} for arm, a in arms.items()}
    details |= {"example_tokens": real, "padded_share_of_padded_arm": round(share, 3),
                "order": alternating(tuple(packing))}
    return Result("p4_packing_speedup", arms["packed"]["tokens_per_s"] / arms["padded"]["tokens_per_s"], 1.5, "x",
                  f"example tokens/s in SFT, packed / padded ({DATASET}, batch {BATCH}, sdpa on CPU); the padded "
                  f"arm's batches are {share:.1%} padding", details)
