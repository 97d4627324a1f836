"""Compose post-training stages by budget: CPT -> SFT -> GRPO, each with its own LoRA rank and freeze policy, ID and
OOD evaluation after every stage (and every `eval_every_steps`), then one loadable folder, a report and a model card.

    bioreason run pipeline --config recipes/configs/quickstart.yaml [key=value ...]

Budget: `total_examples` training examples are split between SFT and RL by `rl_fraction` (the seed study's finding:
brief SFT, a larger RL budget). Hand-off: the SFT adapter is merged into the weights before the RL adapter starts, so
each stage adapts with its own capacity (e.g. SFT rank 256, RL rank 16).

Outputs in `output_dir`: `metrics.json` (`{"stages": [{"name", "id", "ood", "steps", "seconds"}, ...]}`), `final/`
(loads with `AutoModelForCausalLM` after `import bioreason`), `report.md` + PNG plots, and the model card `README.md`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from transformers import TrainerCallback, set_seed
from trl import TrlParser

from bioreason.model.precision import AUTO, Precision, choose_bf16
from bioreason.recipes import cpt, grpo, sft
from bioreason.training.common import (
    BF16_HELP,
    AdaptArguments,
    BioGRPOConfig,
    BioSFTConfig,
    DataArguments,
    ModelArguments,
    base_model,
    baseline_metrics,
    evaluate_splits,
    load_task,
    run_folder,
    save_final,
    write_json,
)
from bioreason.training.faults import kill_point
from bioreason.training.run_state import RunState, config_key


@dataclass
class PipelineArguments:
    output_dir: str = field(default="runs/pipeline", metadata={
        "help": "the run folder: metrics.json, final/, report.md, README.md"})
    stages: list[str] = field(default_factory=lambda: ["cpt", "sft", "grpo"], metadata={
        "help": "stages in order, from cpt, sft, grpo"})
    total_examples: int = field(default=512, metadata={
        "help": "training examples split between SFT and RL by rl_fraction"})
    rl_fraction: float = field(default=0.5, metadata={"help": "share of total_examples that goes to RL prompts"})
    sft_examples: int | None = field(default=None, metadata={
        "help": "SFT examples (overrides total_examples x (1 - rl_fraction))"})
    rl_examples: int | None = field(default=None, metadata={
        "help": "RL prompts (overrides total_examples x rl_fraction)"})
    sft_epochs: float = field(default=1.0, metadata={"help": "passes over the SFT examples"})
    save_model: bool = field(default=True, metadata={
        "help": "save final/, report and card (studies of many runs keep metrics only)"})
    cpt_examples: int = field(default=64, metadata={"help": "CPT (projector alignment) examples"})
    seed: int = field(default=0, metadata={"help": "seed of every stage (LoRA init, data order, sampling)"})
    bf16: str = field(default=AUTO, metadata={"help": BF16_HELP})
    eval_every_steps: int = field(default=0, metadata={
        "help": "also score ID / OOD every N optimizer steps (the curve in metrics.json); 0 = off"})
    evaluate_base: bool = field(default=True, metadata={"help": "score the model before any stage"})
    encoders_trainable: bool | None = field(default=None, metadata={
        "help": "in SFT and GRPO: true trains every encoder, false freezes every encoder (trainable-by-design ones "
                "such as `expression` too: a fixed featurizer, the features the probe baseline reads), unset keeps "
                "each encoder's default (pretrained encoders frozen, trainable-by-design ones trained)"})
    # CPT (projector alignment)
    cpt_learning_rate: float = field(default=1e-3, metadata={"help": "CPT learning rate"})
    cpt_batch_size: int = field(default=8, metadata={"help": "CPT examples per step"})
    # SFT
    sft_learning_rate: float = field(default=2e-4, metadata={"help": "SFT learning rate"})
    sft_batch_size: int = field(default=8, metadata={"help": "SFT examples per step"})
    sft_lora_r: int = field(default=16, metadata={"help": "SFT LoRA rank (0 = full fine-tuning of the unfrozen parts)"})
    sft_lora_alpha: int | None = field(default=None, metadata={"help": "SFT LoRA alpha (default 2 x rank)"})
    sft_packing: bool = field(default=False, metadata={
        "help": "pack several examples into one row (per-example attention)"})
    # GRPO
    grpo_learning_rate: float = field(default=5e-5, metadata={"help": "GRPO learning rate"})
    grpo_prompts_per_step: int = field(default=2, metadata={
        "help": "prompts per GRPO step (each sampled num_generations times)"})
    num_generations: int = field(default=4, metadata={"help": "completions per prompt (the GRPO group)"})
    max_completion_length: int = field(default=32, metadata={"help": "longest completion in tokens"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of GRPO rollouts"})
    grpo_lora_r: int = field(default=4, metadata={"help": "GRPO LoRA rank (0 = full)"})
    grpo_lora_alpha: int | None = field(default=None, metadata={"help": "GRPO LoRA alpha (default 2 x rank)"})
    grpo_projectors_trainable: bool = field(default=False, metadata={
        "help": "GRPO adapts the LLM through LoRA and, by default, leaves the projectors as SFT left them: trained in "
                "full by RL's few noisy updates they moved the features and cost 0.06-0.34 ID accuracy "
                "(docs/BRIDGE.md); true trains them too"})
    beta: float = field(default=0.0, metadata={
        "help": "KL coefficient against the stage's starting model (0 = no reference model)"})
    loss_type: str = field(default="dapo", metadata={"help": "TRL GRPO loss: dapo | grpo | dr_grpo | bnpo"})
    rewards: list[str] = field(default_factory=lambda: ["correctness", "format"], metadata={
        "help": "reward functions by name (bioreason.training.rewards), summed"})
    resume: bool = field(default=True, metadata={
        "help": "continue a killed run in output_dir after its last finished stage (a finished run is not redone); "
                "false starts over"})
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb ..."})


class PeriodicEval(TrainerCallback):
    """Evaluates ID / OOD every N optimizer steps; the points form the curve in metrics.json. The last step is left to
    the stage's own evaluation, which the pipeline adds to the curve (scoring the same model twice costs time)."""

    def __init__(self, every: int, evaluate, stage: str, curve: list):
        self.every, self.evaluate, self.stage, self.curve = every, evaluate, stage, curve

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step >= state.max_steps:
            return
        if self.every and state.global_step % self.every == 0 and state.is_world_process_zero:
            self.curve.append({"stage": self.stage, "step": state.global_step, **self.evaluate(model)})


def trainer_common(p: PipelineArguments, stage: str, precision: Precision) -> dict:
    return {"output_dir": os.path.join(p.output_dir, "checkpoints", stage), "use_cpu": not _cuda(),
            "bf16": precision.bf16,
            "seed": p.seed, "report_to": p.report_to, "logging_steps": 1, "save_strategy": "no",
            "gradient_checkpointing": False, "num_train_epochs": 1, "disable_tqdm": False}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def strip(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items()
            if k in ("n", "accuracy", "macro_f1", "format_rate", "accuracy_swapped", "reliance")}


def run(p: PipelineArguments, model_args: ModelArguments, data: DataArguments) -> dict:
    unknown = set(p.stages) - {"cpt", "sft", "grpo"}
    if unknown:
        raise ValueError(f"Unknown stages {sorted(unknown)}; available: ['cpt', 'grpo', 'sft']")
    with run_folder(p.output_dir):
        return _run(p, model_args, data)


def _run(p: PipelineArguments, model_args: ModelArguments, data: DataArguments) -> dict:
    set_seed(p.seed)
    precision = choose_bf16(p.bf16, "cuda" if _cuda() else "cpu")
    print(f"precision: {precision.name} ({precision.reason})", flush=True)
    state = RunState.open(p.output_dir, config_key(p, model_args, data), resume=p.resume)
    if state.get("finished"):  # a finished run is not redone
        print(f"{p.output_dir}: finished earlier ({', '.join(state.done)}); nothing to do", flush=True)
        return state["metrics"]
    write_json(os.path.join(p.output_dir, "run_config.json"),  # the LLM's source is in the model's config
               {"dataset": data.dataset, "pipeline": vars(p), "model": vars(model_args),
                "data": vars(data), "precision": precision.as_dict(), "torch_threads": torch.get_num_threads()})
    with PartialState().main_process_first():
        dataset, cells = load_task(data)
    if state.done:
        print(f"resuming {p.output_dir} after {', '.join(state.done)}", flush=True)
    model, processor = state.load_model(model_args)
    stages, curve = state["stages"], state["curve"]
    baselines = state.get("baselines")
    if baselines is None:
        baselines = baseline_metrics(model, processor, dataset, cells, data, bf16=precision.bf16)
        state.update(baselines=baselines)
    print("baselines: " + baseline_line(baselines), flush=True)

    def evaluate(m):
        metrics = evaluate_splits(m, processor, dataset, cells, data, bf16=precision.bf16)
        return {k: strip(v) for k, v in metrics.items()}

    if p.evaluate_base and "base" not in state.done:
        start = time.time()
        stages.append({"name": "base", **evaluate(model), "steps": 0, "seconds": round(time.time() - start, 1)})
        state.update(stages=stages)
    n_sft, n_rl = stage_budgets(p)
    for stage in p.stages:
        if stage in state.done:
            continue
        set_seed(p.seed)  # each stage starts from the seed, so a resumed stage draws what the uninterrupted one drew
        stage_data = DataArguments(**{**vars(data)})
        callbacks = [PeriodicEval(p.eval_every_steps, evaluate, stage, curve)] if p.eval_every_steps else []
        if stage == "cpt":
            stage_data.max_train_examples = p.cpt_examples
            config = BioSFTConfig(**trainer_common(p, stage, precision), learning_rate=p.cpt_learning_rate,
                                  per_device_train_batch_size=p.cpt_batch_size)
            result = cpt.run(cpt.CPTRecipeArguments(mode="align"), model_args, stage_data, None, config,
                             model=model, processor=processor, callbacks=callbacks)
        elif stage == "sft":
            stage_data.max_train_examples = n_sft
            set_stage_trainable(model, p.encoders_trainable)
            adapt = AdaptArguments(lora_r=p.sft_lora_r, lora_alpha=p.sft_lora_alpha)
            model = _adapt(model, adapt)
            config = BioSFTConfig(**{**trainer_common(p, stage, precision), "num_train_epochs": p.sft_epochs},
                                  learning_rate=p.sft_learning_rate, per_device_train_batch_size=p.sft_batch_size,
                                  packing=p.sft_packing)
            result = sft.run(sft.SFTRecipeArguments(), model_args, stage_data, adapt, config, model=model,
                             processor=processor, callbacks=callbacks)
        else:
            stage_data.max_train_examples = n_rl
            set_stage_trainable(model, p.encoders_trainable, projectors=p.grpo_projectors_trainable)
            adapt = AdaptArguments(lora_r=p.grpo_lora_r, lora_alpha=p.grpo_lora_alpha)
            model = _adapt(model, adapt)
            config = BioGRPOConfig(**trainer_common(p, stage, precision), learning_rate=p.grpo_learning_rate,
                                   per_device_train_batch_size=p.grpo_prompts_per_step * p.num_generations,
                                   num_generations=p.num_generations, max_completion_length=p.max_completion_length,
                                   temperature=p.temperature, beta=p.beta, loss_type=p.loss_type)
            result = grpo.run(grpo.GRPORecipeArguments(rewards=p.rewards), model_args, stage_data, adapt, config,
                              model=model, processor=processor, callbacks=callbacks)
        model = result.pop("model")
        result.pop("processor")
        if hasattr(model, "merge_and_unload"):  # hand-off: merge this stage's adapter before the next one starts
            model = model.merge_and_unload()
        stages.append({"name": stage, "id": strip(result.get("id", {})), "ood": strip(result.get("ood", {})),
                       "steps": result["steps"], "seconds": result["seconds"],
                       **({"mean_reward": result["mean_reward"]} if "mean_reward" in result else {})})
        if p.eval_every_steps:
            curve.append({"stage": stage, "step": result["steps"], "id": stages[-1]["id"], "ood": stages[-1]["ood"]})
        kill_point("stage-trained")
        state.finish_stage(stage, model, processor, stages=stages, curve=curve)  # stages[-1] is this stage
        kill_point("stage-saved")
    metrics = {"baselines": baselines, "stages": stages, "curve": curve, "precision": precision.as_dict(),
               "budget": {"sft_examples": n_sft, "sft_epochs": p.sft_epochs, "rl_examples": n_rl,
                          "sft_lora_r": p.sft_lora_r, "grpo_lora_r": p.grpo_lora_r}}
    # Save
    if PartialState().is_main_process:  # metrics.json last: its presence says the run finished
        if p.save_model:
            final = os.path.join(p.output_dir, "final")
            set_stage_trainable(base_model(model), None)  # the saved freeze policy is the default, not the last stage's
            save_final(base_model(model), processor, final)
            from bioreason.evaluation.report import write_report

            write_report(p.output_dir, metrics)
            from bioreason.hub.cards import trained_card

            card = trained_card(base_model(model), metrics, dataset_name=data.dataset, repo_id=p.output_dir)
            card.save(os.path.join(p.output_dir, "README.md"))
            card.save(os.path.join(final, "README.md"))
        write_json(os.path.join(p.output_dir, "metrics.json"), metrics)
        state.finish(metrics)
    return metrics


def baseline_line(baselines: dict) -> str:
    """One line: majority and probe accuracy, ID / OOD."""
    return "; ".join(f"{name} ID {b['id']['accuracy']:.3f} / OOD {b['ood']['accuracy']:.3f}"
                     for name, b in baselines.items() if "id" in b and "ood" in b)


def stage_budgets(p: PipelineArguments) -> tuple[int, int]:
    """(SFT examples, RL prompts): explicit budgets, else `total_examples` split by `rl_fraction`."""
    n_sft = p.sft_examples if p.sft_examples is not None else int(round(p.total_examples * (1 - p.rl_fraction)))
    n_rl = p.rl_examples if p.rl_examples is not None else p.total_examples - n_sft
    return (n_sft if "sft" in p.stages else 0), (n_rl if "grpo" in p.stages else 0)


def set_stage_trainable(model, encoders: bool | None, projectors: bool = True) -> None:
    """The SFT / GRPO freeze policy: the LLM trains (through LoRA), the projectors unless told not to, the encoders as
    `encoders_trainable` says."""
    model.set_trainable(encoders=bool(encoders), projectors=projectors, llm=True)
    if encoders is False:
        for modality in model.config.modalities:
            model.set_encoder_trainable(modality, False)


def _adapt(model, adapt: AdaptArguments):
    if adapt.lora_r <= 0:
        return model
    from bioreason.training.adaptation import apply_lora

    return apply_lora(model, r=adapt.lora_r, alpha=adapt.lora_alpha)  # trains what set_stage_trainable left on


def verify_run_folder(path: str, stages: tuple[str, ...] = ("cpt", "sft", "grpo")) -> dict:
    """Check a pipeline run folder has what the README promises; returns its metrics. Used by tests and CI."""
    import json

    with open(os.path.join(path, "metrics.json"), encoding="utf-8") as fh:
        metrics = json.load(fh)
    names = [s["name"] for s in metrics["stages"] if s["name"] != "base"]
    if tuple(names) != tuple(stages):
        raise ValueError(f"{path}: stages {names}, expected {list(stages)}")
    for stage in metrics["stages"]:
        missing = {"name", "id", "ood", "steps", "seconds"} - set(stage)
        if missing or "accuracy" not in stage["id"] or "accuracy" not in stage["ood"]:
            raise ValueError(f"{path}: stage {stage.get('name')} lacks {sorted(missing) or 'ID/OOD accuracy'}")
    missing = {"majority", "probe"} - set(metrics.get("baselines", {}))
    if missing:
        raise ValueError(f"{path}: metrics.json lacks the {sorted(missing)} baseline(s)")
    for name in ("report.md", "stages.png", "README.md", "final/config.json", "final/model.safetensors"):
        if not os.path.exists(os.path.join(path, name)):
            raise ValueError(f"{path}: missing {name}")
    return metrics


ARGUMENTS = (PipelineArguments, ModelArguments, DataArguments)  # what `bioreason run pipeline --help` lists


def main(argv: list[str] | None = None) -> dict:
    from bioreason.training.faults import die_with_parent

    die_with_parent()  # a study's run does not outlive a killed study
    parser = TrlParser(ARGUMENTS)
    p, model_args, data = parser.parse_args_and_config(args=argv)
    return run(p, model_args, data)


if __name__ == "__main__":
    main()
