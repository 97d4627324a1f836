"""The skeleton every stage script runs: seed, data, model, trainer, train (resuming where asked), score; and
`recipe_main`, which parses a stage's config, holds its run folder and saves `final/` and `metrics.json`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from bioreason.training.run_io import end_processes, merged, resume_checkpoint, run_folder, save_final, write_json

# make_trainer(model, processor, train records, cells) -> a Trainer
TrainerFactory = Callable[[Any, Any, Any, Any], Any]


def run_stage(recipe, model_args, data, config, make_trainer: TrainerFactory, model=None, processor=None,
              train=None) -> tuple[dict, Any]:
    """One stage, the same way for every stage script: seed first (before any random init: LoRA A matrices,
    projectors, so reruns and resumes match), the task's train draw (or `train` where the stage brings its own, CPT
    text), the model (`model` continued from an earlier stage, or loaded; both through `prepare_model`), the trainer
    from `make_trainer`, training (from the newest checkpoint with `recipe.resume`), then the held-out scores with
    `recipe.evaluate`. Returns `(result, trainer)`; `result` has steps, seconds, world_size, precision, the scores,
    and the trained `model` and `processor` (where it was scored, the model with its adapter merged, as saved)."""
    from accelerate import PartialState
    from transformers import set_seed

    from bioreason.training.arguments import precision_record
    from bioreason.training.prepare import load_model, prepare_model
    from bioreason.training.task import evaluate_splits, load_task, train_records

    set_seed(config.seed)
    dataset = cells = None
    if train is None:
        with PartialState().main_process_first():
            dataset, cells = load_task(data)
        train = train_records(dataset, data)
    if model is None:
        model, processor = load_model(model_args)
    else:
        model = prepare_model(model, model_args)
    if dataset is not None:  # a task stage: the saved model carries the task it answers (system prompt, question)
        from bioreason.data.chat import task_spec

        processor.task = task_spec(dataset)
    trainer = make_trainer(model, processor, train, cells)
    start = time.time()
    trainer.train(resume_from_checkpoint=resume_checkpoint(config, getattr(recipe, "resume", False)))
    result: dict = {"steps": trainer.state.global_step, "seconds": round(time.time() - start, 1),
                    "world_size": trainer.accelerator.num_processes, "precision": precision_record(config)}
    model = trainer.model
    if getattr(recipe, "evaluate", False) and dataset is not None and trainer.accelerator.is_main_process:
        model = merged(model)  # the scores are those of the saved model
        result.update(evaluate_splits(model, processor, dataset, cells, data, bf16=config.bf16))
    result["model"], result["processor"] = model, processor
    return result, trainer


def recipe_main(run, arguments: tuple[type, ...], argv: list[str] | None) -> dict:
    """Parse `--config FILE` plus overrides into the recipe's dataclasses, run it, and save `final/` and
    `metrics.json` from the main process."""
    from accelerate import PartialState

    from bioreason.training.config import RENAMED, parse_arguments

    recipe, model_args, data, config = parse_arguments(arguments, argv, renamed=RENAMED)
    main_process = PartialState().is_main_process
    with run_folder(config.output_dir):
        finished = os.path.join(config.output_dir, "metrics.json")
        if getattr(recipe, "resume", False) and os.path.exists(finished) and os.path.isdir(
                os.path.join(config.output_dir, "final")):  # a finished run is not redone
            print(f"{config.output_dir}: finished earlier; metrics.json and final/ kept", flush=True)
            with open(finished, encoding="utf-8") as fh:
                result = json.load(fh)
        else:
            result = run(recipe, model_args, data, config)
            if main_process:
                save_final(result.pop("model"), result.pop("processor"), f"{config.output_dir}/final")
                write_json(f"{config.output_dir}/metrics.json", result)
    end_processes()
    return result
