"""Continued pre-training: `text` mode trains the LLM on biological text (txt / jsonl / parquet with a `text` column,
packed by TRL); `align` mode trains only the projectors on sequence -> description pairs (a task dataset's records with
their reasoning text as the description), so a freshly composed model learns to read its encoders first.

    bioreason run cpt --config recipes/configs/antibody_chain/cpt.yaml [key=value ...]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from transformers import set_seed
from trl import SFTConfig

from bioreason.recipes import sft
from bioreason.training.common import (
    BioSFTConfig,
    DataArguments,
    ModelArguments,
    load_model,
    precision_record,
    recipe_arguments,
    recipe_main,
    resume_checkpoint,
)
from bioreason.training.faults import fault_callbacks
from bioreason.training.sft_trainer import BioSFTTrainer


@dataclass
class CPTRecipeArguments:
    mode: str = field(default="align", metadata={
        "help": "align: train the projectors to describe sequences; text: train the LLM on a text corpus"})
    text_files: list[str] | None = field(default=None, metadata={
        "help": "text mode: .txt (one document per blank-line block), .jsonl or .parquet files"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint-N in output_dir"})
    evaluate: bool = field(default=True, metadata={"help": "align: score the held-out splits after training"})


def load_text_corpus(files: list[str]):
    """A `datasets.Dataset` with one `text` column from .txt / .jsonl / .parquet files."""
    from datasets import Dataset, concatenate_datasets, load_dataset

    parts = []
    for path in files:
        if path.endswith(".txt"):
            with open(path, encoding="utf-8") as fh:
                docs = [d.strip() for d in fh.read().split("\n\n") if d.strip()]
            parts.append(Dataset.from_dict({"text": docs}))
        elif path.endswith((".jsonl", ".json")):
            parts.append(load_dataset("json", data_files=path, split="train").select_columns(["text"]))
        elif path.endswith(".parquet"):
            parts.append(load_dataset("parquet", data_files=path, split="train").select_columns(["text"]))
        else:
            raise ValueError(f"{path}: text corpora are .txt, .jsonl or .parquet")
    return concatenate_datasets(parts)


def run(recipe: CPTRecipeArguments, model_args: ModelArguments, data: DataArguments,
        config: SFTConfig, model=None, processor=None, callbacks=None) -> dict:
    if recipe.mode == "align":
        # only the projectors learn; the collator trains on the description of each input
        model_args = replace(model_args, use_peft=False, encoders_trainable=False, projectors_trainable=True,
                             llm_trainable=False)
        if model is not None:
            model.set_trainable(encoders=False, projectors=True, llm=False)
        result = sft.run(sft.SFTRecipeArguments(target="describe", resume=recipe.resume, evaluate=recipe.evaluate),
                         model_args, data, config, model=model, processor=processor, callbacks=callbacks)
        return result
    if recipe.mode != "text" or not recipe.text_files:
        raise ValueError("cpt mode must be 'align', or 'text' with text_files")
    set_seed(config.seed)
    if model is None:
        model, processor = load_model(model_args)
    if config.packing:  # TRL packs with restarting position ids: attend per example without a varlen kernel
        from bioreason.model.packed_attention import use_packed_attention

        use_packed_attention(model)
    config.dataset_text_field = "text"
    config.remove_unused_columns = True
    trainer = BioSFTTrainer(model=model, args=config, train_dataset=load_text_corpus(recipe.text_files),
                         processing_class=processor.tokenizer,
                         callbacks=[*(callbacks or []), *fault_callbacks()])
    start = time.time()
    trainer.train(resume_from_checkpoint=resume_checkpoint(config, recipe.resume))
    return {"steps": trainer.state.global_step, "seconds": round(time.time() - start, 1), "model": trainer.model,
            "processor": processor, "precision": precision_record(config)}


ARGUMENTS = recipe_arguments(CPTRecipeArguments, BioSFTConfig)  # what `bioreason run cpt --help` lists


def main(argv: list[str] | None = None) -> dict:
    return recipe_main(run, ARGUMENTS, argv)


if __name__ == "__main__":
    main()
