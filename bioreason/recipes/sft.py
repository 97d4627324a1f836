"""Supervised fine-tuning on TRL's `SFTTrainer`: loss on the assistant turn only, optional packing, LoRA / QLoRA / full
fine-tuning, a freeze policy per component.

    bioreason run sft --config recipes/configs/antibody_chain/sft.yaml [key=value ...]
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m bioreason.recipes.sft --config FILE

Records become chat text and modality tensors in `bioreason.training.collator.RecordCollator`, so TRL's own dataset
preparation is skipped (`dataset_kwargs.skip_prepare_dataset`) and the record columns are kept
(`remove_unused_columns=False`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from bioreason.training.arguments import BioSFTConfig, DataArguments, ModelArguments, recipe_arguments
from bioreason.training.collator import RecordCollator
from bioreason.training.faults import fault_callbacks
from bioreason.training.sft_trainer import BioSFTTrainer, sft_config_defaults
from bioreason.training.stage import recipe_main, run_stage


@dataclass
class SFTRecipeArguments:
    target: str = field(default="answer", metadata={
        "help": "answer: loss on the assistant turn; describe: on the reasoning text (projector alignment); "
                "describe_other: on another record's reasoning text (alignment's content control)"})
    evaluate: bool = field(default=True, metadata={"help": "score ID / OOD after training"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint-N in output_dir"})


def run(recipe: SFTRecipeArguments, model_args: ModelArguments, data: DataArguments,
        config: SFTConfig, model=None, processor=None, callbacks=None) -> dict:
    """Train and evaluate; returns `{"validation", "id", "ood", "steps", "seconds", ...}` with the trained model.
    `model`/`processor` continue an earlier stage (a pipeline's), made ready by `prepare_model` like a loaded one."""
    config, packing = sft_config_defaults(config)

    def make_trainer(model, processor, train, cells):
        if packing:  # per-example attention over the packed row where there is no varlen kernel (sdpa on CPU)
            from bioreason.model.packed_attention import use_packed_attention

            use_packed_attention(model)
        collator = RecordCollator(processor, cells=cells, use_reasoning=data.use_reasoning, packing=packing,
                                  target=recipe.target)
        return BioSFTTrainer(model=model, args=config, train_dataset=train, data_collator=collator,
                             processing_class=processor.tokenizer,
                             callbacks=[*(callbacks or []), *fault_callbacks()])

    result, _ = run_stage(recipe, model_args, data, config, make_trainer, model=model, processor=processor)
    return result


ARGUMENTS = recipe_arguments(SFTRecipeArguments, BioSFTConfig)  # what `bioreason run sft --help` lists


def main(argv: list[str] | None = None) -> dict:
    return recipe_main(run, ARGUMENTS, argv)


if __name__ == "__main__":
    main()
