"""Supervised fine-tuning on TRL's `SFTTrainer`: loss on the assistant turn only, optional packing, LoRA / QLoRA / full
fine-tuning, a freeze policy per component.

    bioreason run sft --config recipes/configs/antibody_chain/sft.yaml [key=value ...]
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m recipes.sft --config FILE

Records become chat text and modality tensors in `bioreason.collator.RecordCollator`, so TRL's own dataset preparation
is skipped (`dataset_kwargs.skip_prepare_dataset`) and the record columns are kept (`remove_unused_columns=False`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from accelerate import PartialState
from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from bioreason.collator import RecordCollator
from recipes.common import (
    AdaptArguments,
    AtomicCheckpointMixin,
    DataArguments,
    ModelArguments,
    evaluate_splits,
    load_model,
    load_task,
    recipe_main,
    train_records,
)


@dataclass
class SFTRecipeArguments:
    target: str = "answer"  # "describe": train on the reasoning text (projector alignment)
    evaluate: bool = True
    resume: bool = False


class BioSFTTrainer(AtomicCheckpointMixin, SFTTrainer):
    """SFTTrainer with atomic checkpoints, and on CPU the model's own loss instead of TRL's fused LM head.

    TRL computes the loss through a chunked LM head that never materializes the logits, which saves GPU memory but,
    without Triton, scores every position in float32 tiles: a SmolLM2-135M step (8 x 512 tokens) takes 16.7 s that way
    against 10.4 s with one cross-entropy over the full logits (bench/p5_mfu.py). On CPU, where memory is not the
    limit, the plain loss is used; it is the same sum of token log-likelihoods over the same count
    (tests/test_recipes.py compares the two)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.full_logits_loss = self.accelerator.device.type == "cpu"

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.full_logits_loss or self.aux_loss_enabled or self.args.loss_type != "nll" or return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        inputs = {**inputs, "use_cache": False}
        outputs = model(**inputs, num_items_in_batch=num_items_in_batch)
        loss = outputs.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        with torch.no_grad():  # the token accuracy TRL logs (its entropy would cost another softmax pass here)
            labels = inputs["labels"][:, 1:]
            valid = labels != -100
            correct = (outputs.logits[:, :-1].argmax(-1) == labels) & valid
            n_valid = self.accelerator.gather_for_metrics(valid.sum()).sum()
            n_correct = self.accelerator.gather_for_metrics(correct.sum()).sum()
        self._metrics[mode]["mean_token_accuracy"].append((n_correct / n_valid).item() if n_valid > 0 else 0.0)
        if mode == "train":
            mask = inputs.get("attention_mask")
            local = mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel())
            self._total_train_tokens += self.accelerator.gather_for_metrics(local).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return loss


def sft_config_defaults(config: SFTConfig) -> tuple[SFTConfig, bool]:
    """Our collator packs (SFTConfig.packing is read, then switched off so TRL does not try to pack raw records)."""
    packing, config.packing = config.packing, False
    config.remove_unused_columns = False
    config.dataset_kwargs = {**(config.dataset_kwargs or {}), "skip_prepare_dataset": True}
    return config, packing


def run(recipe: SFTRecipeArguments, model_args: ModelArguments, data: DataArguments, adapt: AdaptArguments,
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
        model, processor = load_model(model_args, adapt)
    if packing:  # per-example attention over the packed row where there is no varlen kernel (sdpa on CPU)
        from bioreason.packed_attention import use_packed_attention

        use_packed_attention(model)
    collator = RecordCollator(processor, cells=cells, use_reasoning=data.use_reasoning, packing=packing,
                              target=recipe.target)
    # Train
    trainer = BioSFTTrainer(model=model, args=config, train_dataset=train, data_collator=collator,
                            processing_class=processor.tokenizer, callbacks=callbacks)
    start = time.time()
    trainer.train(resume_from_checkpoint=True if recipe.resume else None)
    seconds = time.time() - start
    # Evaluate
    result = {"steps": trainer.state.global_step, "seconds": round(seconds, 1),
              "world_size": trainer.accelerator.num_processes}
    if recipe.evaluate and trainer.accelerator.is_main_process:
        result.update(evaluate_splits(trainer.model, processor, dataset, cells, data, bf16=config.bf16))
    result["model"], result["processor"] = trainer.model, processor
    return result


def main(argv: list[str] | None = None) -> dict:
    return recipe_main(run, SFTRecipeArguments, SFTConfig, argv)


if __name__ == "__main__":
    main()
