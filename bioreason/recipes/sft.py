"""Supervised fine-tuning on TRL's `SFTTrainer`: loss on the assistant turn only, optional packing, LoRA / QLoRA / full
fine-tuning, a freeze policy per component.

    bioreason run sft --config recipes/configs/antibody_chain/sft.yaml [key=value ...]
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m bioreason.recipes.sft --config FILE

Records become chat text and modality tensors in `bioreason.training.collator.RecordCollator`, so TRL's own dataset
preparation is skipped (`dataset_kwargs.skip_prepare_dataset`) and the record columns are kept
(`remove_unused_columns=False`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from accelerate import PartialState
from transformers import set_seed
from trl import SFTConfig

from bioreason.training.collator import RecordCollator
from bioreason.training.common import (
    BioSFTConfig,
    DataArguments,
    ModelArguments,
    evaluate_splits,
    load_model,
    load_task,
    precision_record,
    recipe_arguments,
    recipe_main,
    resume_checkpoint,
    train_records,
)
from bioreason.training.faults import fault_callbacks
from bioreason.training.sft_trainer import BioSFTTrainer, sft_config_defaults


@dataclass
class SFTRecipeArguments:
    target: str = field(default="answer", metadata={
        "help": "answer: loss on the assistant turn; describe: on the reasoning text (projector alignment)"})
    evaluate: bool = field(default=True, metadata={"help": "score ID / OOD after training"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint-N in output_dir"})


def run(recipe: SFTRecipeArguments, model_args: ModelArguments, data: DataArguments,
        config: SFTConfig, model=None, processor=None, callbacks=None) -> dict:
    """Train and evaluate; returns `{"id", "ood", "steps", "seconds"}`. `model`/`processor` continue a pipeline."""
    config, packing = sft_config_defaults(config)
    set_seed(config.seed)  # before any random init (LoRA A matrices, projectors): reruns and resumes match
    # Load data
    with PartialState().main_process_first():
        dataset, cells = load_task(data)
    train = train_records(dataset, data)
    # Load model and processor
    if model is None:
        model, processor = load_model(model_args)
    if packing:  # per-example attention over the packed row where there is no varlen kernel (sdpa on CPU)
        from bioreason.model.packed_attention import use_packed_attention

        use_packed_attention(model)
    collator = RecordCollator(processor, cells=cells, use_reasoning=data.use_reasoning, packing=packing,
                              target=recipe.target)
    # Train
    trainer = BioSFTTrainer(model=model, args=config, train_dataset=train, data_collator=collator,
                            processing_class=processor.tokenizer,
                            callbacks=[*(callbacks or []), *fault_callbacks()])
    start = time.time()
    trainer.train(resume_from_checkpoint=resume_checkpoint(config, recipe.resume))
    seconds = time.time() - start
    # Evaluate
    result = {"steps": trainer.state.global_step, "seconds": round(seconds, 1),
              "world_size": trainer.accelerator.num_processes, "precision": precision_record(config)}
    if recipe.evaluate and trainer.accelerator.is_main_process:
        result.update(evaluate_splits(trainer.model, processor, dataset, cells, data, bf16=config.bf16))
    result["model"], result["processor"] = trainer.model, processor
    return result


ARGUMENTS = recipe_arguments(SFTRecipeArguments, BioSFTConfig)  # what `bioreason run sft --help` lists


def main(argv: list[str] | None = None) -> dict:
    return recipe_main(run, ARGUMENTS, argv)


if __name__ == "__main__":
    main()
