"""p3_grpo_speedup: GRPO step time with G=8 samples per prompt, the plain TRL path / ours.

Plain: every sample runs the frozen encoder and the whole prompt, in generation, in the reference (KL) pass and in the
policy pass, as TRL does for any model. Ours: the feature cache encodes each unique input once, generation prefills
each prompt once, and the log-prob passes run each prompt once per group (`bioreason.model.rollout`);
tests/test_rollout.py shows the two give the same loss and update. SmolLM2-135M (LoRA r16) + the ESM2-650M-shaped
encoder on antibody_chain, 2 prompts x 8 samples a step, 32 new tokens, beta 0.04, in the precision `bf16: auto`
picks.

The arms are paired: both start from the same weights and seed and take SGD steps (Adam's first step turns float
noise in a gradient into a full-size move, which would let the arms' later rollouts drift apart), so they sample the
same completions; each arm records its completions and `paired_rollouts` checks they are equal, else the figure is
not reported. The arms run twice, in alternating order (plain, shared, shared, plain); each run is paired with the
other arm's run of the same round, and each arm's step time is the median over both runs. A `length` reward with a
short target joins correctness and format so that samples of a group differ in reward and the loss is not 0 by
construction (an untrained model gets every answer wrong and never the format)."""

from __future__ import annotations

import copy
import gc
import statistics
import tempfile

import torch

from bench.common import Result, alternating, task
from bench.sft_timing import StepTimer

PROMPTS, G, STEPS, NEW_TOKENS = 2, 8, 3, 32
SHORT = 96  # the length reward's target in characters: 32-token samples straddle it, so groups differ in reward


def grpo_steps(model, processor, share: bool, out: str) -> dict:
    from bioreason.training.adaptation import apply_lora
    from bioreason.training.arguments import BioGRPOConfig, DataArguments, ModelArguments
    from bioreason.training.grpo_trainer import BioGRPOTrainer, grpo_dataset
    from bioreason.training.prepare import enable_feature_cache
    from bioreason.training.task import train_records

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
                           remove_unused_columns=False, gradient_checkpointing=False, disable_tqdm=True, optim="sgd")
    from bioreason.training.rewards import completion_text, get_reward

    timer, sampled = StepTimer(), []

    def recorded_length(completions, **kwargs):  # a real reward that also keeps what was sampled, in order
        sampled.extend(completion_text(c) for c in completions)
        return get_reward("length")(completions, **{**kwargs, "target_chars": SHORT})

    recorded_length.__name__ = "length"
    trainer = BioGRPOTrainer(model=model, args=config, train_dataset=grpo_dataset(records), processor=processor,
                             cells=cells, callbacks=[timer], share_prompts=share,
                             reward_funcs=[get_reward("correctness"), get_reward("format"), recorded_length])
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"step_s": [round(s, 2) for s in timer.steps], "losses": losses, "completions": sampled}


def paired_rollouts(plain: dict, shared: dict) -> None:
    """The two arms must have sampled the same completions, step for step, for their times to compare the same work."""
    if plain["completions"] != shared["completions"]:
        differ = sum(a != b for a, b in zip(plain["completions"], shared["completions"], strict=False))
        raise RuntimeError(f"p3 arms are not paired: {differ} of {len(plain['completions'])} completions differ "
                           f"({len(shared['completions'])} in the shared arm)")


def run(model=None, processor=None) -> Result:
    if model is None:
        from bench.p1_cache import build

        model, processor = build()
    runs: dict[str, list[dict]] = {"plain": [], "shared": []}
    for arm in alternating(tuple(runs)):
        with tempfile.TemporaryDirectory() as out:
            runs[arm].append(grpo_steps(model, processor, arm == "shared", out))
        gc.collect()
    for plain_run, shared_run in zip(runs["plain"], runs["shared"], strict=True):
        paired_rollouts(plain_run, shared_run)
    steps = {arm: [s for r in arm_runs for s in r["step_s"]] for arm, arm_runs in runs.items()}
    plain, shared = (statistics.median(steps[a]) for a in ("plain", "shared"))
    return Result(
        "p3_grpo_speedup", plain / shared, 2.0, "x",
        f"GRPO step time ({PROMPTS} prompts x G={G}, {NEW_TOKENS} new tokens, KL reference), plain TRL path / ours",
        {"plain_step_s": steps["plain"], "shared_step_s": steps["shared"],
         "plain_losses": runs["plain"][0]["losses"], "shared_losses": runs["shared"][0]["losses"],
         "paired_completions": sum(len(r["completions"]) for r in runs["plain"]),
         "order": alternating(tuple(runs))})
