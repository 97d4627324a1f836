"""p3_grpo_speedup: GRPO step time with G=8 samples per prompt, the plain TRL path / ours.

Plain: every sample runs the frozen encoder and the whole prompt, in generation, in the reference (KL) pass and in the
policy pass, as TRL does for any model. Ours: the feature cache encodes each unique input once, generation prefills
each prompt once, and the log-prob passes run each prompt once per group (`bioreason.model.rollout`);
tests/test_rollout.py shows the two give the same loss and update. SmolLM2-135M (LoRA r16) + the ESM2-650M-shaped
encoder on antibody_chain, 2 prompts x 8 samples a step, 32 new tokens, beta 0.04, in the precision `bf16: auto`
picks."""

from __future__ import annotations

import copy
import gc
import statistics
import tempfile

import torch

from bench.common import Result, task
from bench.sft_timing import StepTimer

PROMPTS, G, STEPS, NEW_TOKENS = 2, 8, 3, 32


def grpo_steps(model, processor, share: bool, out: str) -> dict:
    from bioreason.recipes.grpo import BioGRPOTrainer, grpo_dataset
    from bioreason.training.adaptation import apply_lora
    from bioreason.training.common import (
        BioGRPOConfig,
        DataArguments,
        ModelArguments,
        enable_feature_cache,
        train_records,
    )

    torch.manual_seed(0)
    model = copy.deepcopy(model)
    model.set_trainable(encoders=False, projectors=True, llm=True)
    enable_feature_cache(model, ModelArguments(feature_cache="memory" if share else "off"))
    model = apply_lora(model, r=16)
    dataset, cells = task("antibody_chain")
    records = train_records(dataset, DataArguments(max_train_examples=PROMPTS * STEPS))
    config = BioGRPOConfig(output_dir=out, per_device_train_batch_size=PROMPTS * G, num_generations=G,
                           max_completion_length=NEW_TOKENS, max_steps=STEPS, learning_rate=1e-5, beta=0.04,
                           use_cpu=True, bf16="auto", report_to="none", logging_steps=1, seed=0, save_strategy="no",
                           remove_unused_columns=False, gradient_checkpointing=False, disable_tqdm=True)
    from bioreason.training.rewards import get_reward

    timer = StepTimer()
    trainer = BioGRPOTrainer(model=model, args=config, train_dataset=grpo_dataset(records), processor=processor,
                             cells=cells, reward_funcs=[get_reward("correctness"), get_reward("format")],
                             callbacks=[timer], share_prompts=share)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"step_s": [round(s, 2) for s in timer.steps], "losses": losses}


def run(model=None, processor=None) -> Result:
    if model is None:
        from bench.p1_cache import build

        model, processor = build()
    arms = {}
    for arm, share in (("plain", False), ("shared", True)):
        with tempfile.TemporaryDirectory() as out:
            arms[arm] = grpo_steps(model, processor, share, out)
        gc.collect()
    plain, shared = (statistics.median(arms[a]["step_s"]) for a in ("plain", "shared"))
    return Result(
        "p3_grpo_speedup", plain / shared, 2.0, "x",
        f"GRPO step time ({PROMPTS} prompts x G={G}, {NEW_TOKENS} new tokens, KL reference), plain TRL path / ours",
        {"plain_step_s": arms["plain"]["step_s"], "shared_step_s": arms["shared"]["step_s"],
         "plain_losses": arms["plain"]["losses"], "shared_losses": arms["shared"]["losses"]})
