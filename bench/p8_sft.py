"""p8_sft_speedup: SFT epoch time of the SFT recipe / what a user would otherwise write with TRL and PEFT.

Baseline: TRL's own `SFTTrainer` on the same composed model (SmolLM2-135M + AntiBERTy, resampler 16 tokens) wrapped by
PEFT with the same LoRA (r16 on the LLM, projector trained in full), the same records through the same collator,
padded batches, no feature cache (the frozen encoder runs every step) and TRL's fused head, which on CPU projects every
position. Ours: the SFT recipe (`bioreason.recipes.sft.run`) with the frozen-encoder feature cache, the fp32 head on the
assistant tokens only, and packing (`sdpa_packed`). Both run 2 epochs of the same examples from the same seed in the
precision `bf16: auto` picks; the figure compares the mean epoch time (the cache fills in epoch 1, which counts)."""

from __future__ import annotations

import copy
import gc
import statistics
import tempfile

from bench.common import Result, precision, quickstart_model, task
from bench.sft_timing import StepTimer, sft

EXAMPLES, EPOCHS, BATCH = 48, 2, 8
PROFILE_STEP = 8  # an epoch-2 step: the cache is warm in our arm


def baseline(model, processor, out: str) -> dict:
    """Plain TRL SFTTrainer + PEFT, as the TRL and PEFT docs would have a user write it."""
    from trl import SFTConfig, SFTTrainer

    from bioreason.training.adaptation import apply_lora
    from bioreason.training.arguments import DataArguments
    from bioreason.training.collator import RecordCollator
    from bioreason.training.task import train_records

    model = copy.deepcopy(model)
    model.disable_feature_cache()
    model.set_trainable(encoders=False, projectors=True, llm=True)
    model = apply_lora(model, r=16)  # peft.get_peft_model with the recipe's LoraConfig
    dataset, cells = task("antibody_chain")
    records = train_records(dataset, DataArguments(max_train_examples=EXAMPLES))
    config = SFTConfig(output_dir=out, num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
                       learning_rate=5e-4, bf16=precision().bf16, use_cpu=True, report_to="none",
                       save_strategy="no", gradient_checkpointing=False, logging_steps=1, disable_tqdm=True, seed=0,
                       remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True})
    timer = StepTimer(profile_step=PROFILE_STEP)
    trainer = SFTTrainer(model=model, args=config, train_dataset=records, processing_class=processor.tokenizer,
                         data_collator=RecordCollator(processor, cells=cells, use_reasoning=False),
                         callbacks=[timer])
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"epochs": timer.epochs, "steps": timer.steps, "losses": losses, "profile": timer.profile}


def epoch_times(timing: dict, steps_per_epoch: int) -> list[float]:
    """Epoch wall times with the profiled step's time replaced by its epoch's median step (the profiler's own
    overhead, larger for TRL's many small head ops, must not count in the figure)."""
    epochs = list(timing["epochs"])
    index = PROFILE_STEP - 1
    epoch = index // steps_per_epoch
    others = [s for i, s in enumerate(timing["steps"]) if i // steps_per_epoch == epoch and i != index]
    epochs[epoch] += statistics.median(others) - timing["steps"][index]
    return epochs


def run() -> Result:
    model, processor = quickstart_model()
    with tempfile.TemporaryDirectory() as out:
        plain = baseline(model, processor, out)
    gc.collect()
    with tempfile.TemporaryDirectory() as out:
        ours = sft(model, processor, "antibody_chain", EXAMPLES, EPOCHS, BATCH, out, feature_cache="memory",
                   packing=True, profile_step=PROFILE_STEP)
    del ours["model"]
    per_epoch = -(-EXAMPLES // BATCH)
    plain["epochs"], ours["epochs"] = epoch_times(plain, per_epoch), epoch_times(ours, per_epoch)
    plain_epoch, ours_epoch = statistics.mean(plain["epochs"]), statistics.mean(ours["epochs"])
    return Result(
        "p8_sft_speedup", plain_epoch / ours_epoch, 3.0, "x",
        f"SFT epoch time ({EXAMPLES} antibody_chain examples, batch {BATCH}, LoRA r16, SmolLM2 + AntiBERTy, "
        f"{precision().name}), plain TRL SFTTrainer + PEFT / the SFT recipe",
        {"plain_epoch_s": [round(x, 1) for x in plain["epochs"]], "ours_epoch_s": [round(x, 1) for x in ours["epochs"]],
         "plain_step_s_median": round(statistics.median(plain["steps"]), 2),
         "ours_step_s_median": round(statistics.median(ours["steps"]), 2), "ours_steps": len(ours["steps"]),
         "plain_steps": len(plain["steps"]), "plain_losses": [round(x, 4) for x in plain["losses"]],
         "ours_losses": [round(x, 4) for x in ours["losses"]], "cache": ours["cache"],
         f"plain_step{PROFILE_STEP}_profile_self_cpu_share": plain["profile"],
         f"ours_step{PROFILE_STEP}_profile_self_cpu_share": ours["profile"]})
