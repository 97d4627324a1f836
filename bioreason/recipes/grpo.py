"""Reinforcement learning with GRPO: the stage script around `bioreason.training.grpo_trainer.BioGRPOTrainer` (TRL's
`GRPOTrainer` with the encoders in the loop). Rewards are `bioreason.training.rewards.REWARDS` entries, summed; dataset
columns (`answer`, `label_set`) reach them as keyword lists.

    bioreason run grpo --config recipes/configs/antibody_chain/grpo.yaml [key=value ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from bioreason.training.arguments import BioGRPOConfig, DataArguments, ModelArguments, recipe_arguments
from bioreason.training.faults import fault_callbacks
from bioreason.training.grpo_trainer import BioGRPOTrainer, grpo_dataset
from bioreason.training.rewards import get_reward
from bioreason.training.solved_stop import StopWhenSolved
from bioreason.training.stage import recipe_main, run_stage


@dataclass
class GRPORecipeArguments:
    rewards: list[str] = field(default_factory=lambda: ["correctness", "format"], metadata={
        "help": "reward functions by name (bioreason.training.rewards), summed"})
    share_prompts: bool = field(default=True, metadata={
        "help": "compute each prompt once per group in generation and the log-prob passes (same loss)"})
    evaluate: bool = field(default=True, metadata={"help": "score ID / OOD after training"})
    stop_when_solved: int = field(default=2, metadata={
        "help": "end the stage after this many consecutive steps in which every rollout is right (every group "
                "without advantage: no gradient to learn from); 0 = never"})
    dynamic_sampling: int = field(default=0, metadata={
        "help": "k > 1: sample k times each batch's prompts and train on the groups whose rewards differ (advantage); "
                "0 = TRL's sampling. With it, stop_when_solved counts batches whose whole draw had none"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint-N in output_dir"})


def grpo_config_defaults(config: GRPOConfig) -> GRPOConfig:
    config.remove_unused_columns = False
    return config


def run(recipe: GRPORecipeArguments, model_args: ModelArguments, data: DataArguments,
        config: GRPOConfig, model=None, processor=None, callbacks=None) -> dict:
    """Train and evaluate; returns what `sft.run` does plus the rewards (`mean_reward`) and the solved-stop record.
    A warm start passes the SFT folder as model_name_or_path, or the model itself."""
    config = grpo_config_defaults(config)
    solved = StopWhenSolved(recipe.stop_when_solved)

    def make_trainer(model, processor, train, cells):
        return BioGRPOTrainer(model=model, args=config, train_dataset=grpo_dataset(train), processor=processor,
                              cells=cells, reward_funcs=[get_reward(name) for name in recipe.rewards],
                              callbacks=[*(callbacks or []), *fault_callbacks(), solved],
                              share_prompts=recipe.share_prompts, dynamic_sampling=recipe.dynamic_sampling)

    result, trainer = run_stage(recipe, model_args, data, config, make_trainer, model=model, processor=processor)
    result.update(solved.record())
    if recipe.dynamic_sampling > 1:
        result["dynamic_sampling"] = dict(trainer.sampling_record)
    rewards = [log.get("reward") for log in trainer.state.log_history if "reward" in log]
    if rewards:
        result["mean_reward"] = float(sum(rewards) / len(rewards))
    return result


ARGUMENTS = recipe_arguments(GRPORecipeArguments, BioGRPOConfig)  # what `bioreason run grpo --help` lists


def main(argv: list[str] | None = None) -> dict:
    return recipe_main(run, ARGUMENTS, argv)


if __name__ == "__main__":
    main()
