"""Continued pre-training: `text` mode trains the LLM on biological text (txt / jsonl / parquet with a `text` column,
packed by TRL); `align` mode trains only the projectors on sequence -> description pairs (a task dataset's records with
their reasoning text as the description), so a freshly composed model learns to read its encoders first. Neither
trains on a corpus that holds an input of the task's held-out splits (`bioreason.data.leakage`): align checks its
train draw, text checks each file against the task's sequences when a `dataset` is given.

    bioreason run cpt --config recipes/configs/antibody_chain/cpt.yaml [key=value ...]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from trl import SFTConfig

from bioreason.recipes import sft
from bioreason.training.arguments import BioSFTConfig, DataArguments, ModelArguments, recipe_arguments
from bioreason.training.faults import fault_callbacks
from bioreason.training.sft_trainer import BioSFTTrainer
from bioreason.training.stage import recipe_main, run_stage


@dataclass
class AlignArguments:
    """What projector alignment trains on; also a pipeline's `cpt:` section key."""

    descriptions: str = field(default="own", metadata={
        "help": "align: own (each input's description) or other (each input paired with another train record's "
                "description: the same texts and steps with the pairing broken, the control that tells what "
                "alignment gains from what the descriptions say)"})

    def __post_init__(self):
        if self.descriptions not in ("own", "other"):
            raise ValueError(f"cpt descriptions {self.descriptions!r}: own or other")


@dataclass
class CPTRecipeArguments(AlignArguments):
    mode: str = field(default="align", metadata={
        "help": "align: train the projectors to describe sequences; text: train the LLM on a text corpus"})
    text_files: list[str] | None = field(default=None, metadata={
        "help": "text mode: .txt (one document per blank-line block), .jsonl or .parquet files"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint-N in output_dir"})
    evaluate: bool = field(default=True, metadata={"help": "align: score the held-out splits after training"})


def load_text_corpus(files: list[str], task=None):
    """A `datasets.Dataset` with one `text` column from .txt / .jsonl / .parquet files; with `task` (a task
    DatasetDict) each file is refused if a document quotes one of its held-out sequences."""
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
        if task is not None:
            from bioreason.data.leakage import check_text_corpus

            check_text_corpus(parts[-1]["text"], path, task)
    return concatenate_datasets(parts)


def run(recipe: CPTRecipeArguments, model_args: ModelArguments, data: DataArguments,
        config: SFTConfig, model=None, processor=None, callbacks=None) -> dict:
    if recipe.mode == "align":
        # only the projectors learn (prepare_model applies this policy to a loaded or a handed-on model alike); the
        # collator trains on the description of each input
        model_args = replace(model_args, use_peft=False, encoders_trainable=False, projectors_trainable=True,
                             llm_trainable=False)
        from bioreason.data.leakage import check_align_corpus
        from bioreason.training.task import load_task, train_records

        task, _ = load_task(data)
        check_align_corpus(train_records(task, data), task, data.dataset)
        target = "describe" if recipe.descriptions == "own" else "describe_other"
        return sft.run(sft.SFTRecipeArguments(target=target, resume=recipe.resume, evaluate=recipe.evaluate),
                       model_args, data, config, model=model, processor=processor, callbacks=callbacks)
    if recipe.mode != "text" or not recipe.text_files:
        raise ValueError("cpt mode must be 'align', or 'text' with text_files")
    config.dataset_text_field = "text"
    config.remove_unused_columns = True

    def make_trainer(model, processor, train, cells):
        if config.packing:  # TRL packs with restarting position ids: attend per example without a varlen kernel
            from bioreason.model.packed_attention import use_packed_attention

            use_packed_attention(model)
        return BioSFTTrainer(model=model, args=config, train_dataset=train, processing_class=processor.tokenizer,
                             callbacks=[*(callbacks or []), *fault_callbacks()])

    task = None
    if data.dataset:  # the task this model will be fine-tuned on: its held-out sequences stay out of the corpus
        from bioreason.training.task import load_task

        task, _ = load_task(data)
    result, _ = run_stage(recipe, model_args, data, config, make_trainer, model=model, processor=processor,
                          train=load_text_corpus(recipe.text_files, task))
    return result


ARGUMENTS = recipe_arguments(CPTRecipeArguments, BioSFTConfig)  # what `bioreason run cpt --help` lists


def main(argv: list[str] | None = None) -> dict:
    return recipe_main(run, ARGUMENTS, argv)


if __name__ == "__main__":
    main()
