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

import contextlib
import difflib
import json
import os
import time
from dataclasses import dataclass, field, fields, replace

import torch
from accelerate import PartialState
from transformers import TrainerCallback, set_seed

from bioreason.data.chat import task_spec
from bioreason.data.records import EVAL_SPLITS, TEST_SPLITS
from bioreason.model.precision import AUTO, Precision, choose_bf16
from bioreason.recipes import cpt, grpo, sft
from bioreason.training.arguments import BF16_HELP, BioGRPOConfig, BioSFTConfig, DataArguments, ModelArguments
from bioreason.training.config import RENAMED as STAGE_RENAMED
from bioreason.training.config import parse_arguments
from bioreason.training.faults import kill_point
from bioreason.training.prepare import base_model, default_freeze_policy
from bioreason.training.run_io import merged, resume_checkpoint, run_folder, save_final, write_json
from bioreason.training.run_state import RunState, config_key
from bioreason.training.stage_cache import StageCache, StageEntry, prefix_key
from bioreason.training.task import baseline_metrics, evaluate_splits, load_task

# What each stage runs with unless its section says otherwise (the seed study's shape: a brief SFT at a larger LoRA
# rank, RL at a smaller one).
STAGE_DEFAULTS: dict[str, dict] = {
    "cpt": {"learning_rate": 1e-3, "per_device_train_batch_size": 8},
    "sft": {"learning_rate": 2e-4, "per_device_train_batch_size": 8, "num_train_epochs": 1.0, "use_peft": True,
            "lora_r": 16},
    "grpo": {"learning_rate": 5e-5, "per_device_train_batch_size": 8, "num_generations": 4,
             "max_completion_length": 32, "temperature": 1.0, "beta": 0.0, "loss_type": "dapo", "use_peft": True,
             "lora_r": 4, "projectors_trainable": False, "rewards": ["correctness", "format"]},
}
# Set by the pipeline for every stage (top-level fields or the run folder), so a section may not set them.
PIPELINE_OWNED = {"output_dir", "seed", "bf16", "report_to", "max_train_examples", "model_name_or_path",
                  "encoders_trainable", "llm_trainable"}
SECTION_CLASSES = {"cpt": (BioSFTConfig, cpt.AlignArguments), "sft": (BioSFTConfig,),
                   "grpo": (BioGRPOConfig, grpo.GRPORecipeArguments)}
# The flat names these settings had before the sections (refused with their new name).
RENAMED = {**{f"{stage}_{key}": f"{stage}.{new}" for stage, keys in {
               "cpt": {"learning_rate": "learning_rate", "batch_size": "per_device_train_batch_size"},
               "sft": {"learning_rate": "learning_rate", "batch_size": "per_device_train_batch_size",
                       "lora_r": "lora_r", "lora_alpha": "lora_alpha", "packing": "packing",
                       "epochs": "num_train_epochs"},
               "grpo": {"learning_rate": "learning_rate", "lora_r": "lora_r", "lora_alpha": "lora_alpha",
                        "projectors_trainable": "projectors_trainable"}}.items() for key, new in keys.items()},
           "grpo_prompts_per_step": "grpo.per_device_train_batch_size (prompts x num_generations)",
           **{key: f"grpo.{key}" for key in ("num_generations", "max_completion_length", "temperature", "beta",
                                              "loss_type", "rewards")},
           **STAGE_RENAMED}
# Model-level ModelConfig fields a section sets: adaptation capacity and what trains.
STAGE_MODEL_FIELDS = {"use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
                      "lora_target_parameters", "lora_modules_to_save", "use_rslora", "use_dora",
                      "projectors_trainable"}


@dataclass
class PipelineArguments:
    output_dir: str = field(default="runs/pipeline", metadata={
        "help": "the run folder: metrics.json, final/, report.md, README.md"})
    stages: list[str] = field(default_factory=lambda: ["cpt", "sft", "grpo"], metadata={
        "help": "stages in order, from cpt, sft, grpo"})
    total_examples: int = field(default=512, metadata={
        "help": "training examples split between SFT and RL by rl_fraction"})
    rl_fraction: float = field(default=0.5, metadata={
        "help": "share of total_examples that goes to RL prompts (0: SFT alone, 1: RL alone; a stage given none is "
                "skipped)"})
    sft_examples: int | None = field(default=None, metadata={
        "help": "SFT examples (overrides total_examples x (1 - rl_fraction))"})
    rl_examples: int | None = field(default=None, metadata={
        "help": "RL prompts (overrides total_examples x rl_fraction)"})
    cpt_examples: int = field(default=64, metadata={"help": "CPT (projector alignment) examples"})
    save_model: bool = field(default=True, metadata={
        "help": "save final/, report and card (studies of many runs keep metrics only)"})
    seed: int = field(default=0, metadata={"help": "seed of every stage (LoRA init, data order, sampling)"})
    bf16: str = field(default=AUTO, metadata={"help": BF16_HELP})
    eval_every_steps: int = field(default=0, metadata={
        "help": "also score the validation split every N optimizer steps (the curve in metrics.json, where "
                "checkpoints are chosen); 0 = off"})
    curve_splits: list[str] = field(default_factory=lambda: ["validation"], metadata={
        "help": "the splits each periodic evaluation scores: validation (where checkpoints and configs are chosen), "
                "and id / ood for the record, to see OOD along SFT (an OOD peak before the end); the test splits "
                "only where score_test_splits is true"})
    checkpoint_every_steps: int = field(default=50, metadata={
        "help": "save a stage's trainer checkpoint (its adapter, trained modules, optimizer, RNG and data position; "
                "the newest one only) every N optimizer steps, so a stage killed midway resumes from it instead of "
                "from its start; 0 = off"})
    evaluate_base: bool = field(default=True, metadata={"help": "score the model before any stage"})
    score_test_splits: bool = field(default=True, metadata={
        "help": "score id_test / ood_test after each stage; false: validation only, for the runs that choose a "
                "config (the chosen config is then scored on the test splits once). Skips most of the scoring time "
                "where the test splits are large, and the reliance passes"})
    reliance: str = field(default="all", metadata={
        "help": "which stages measure their reliance on the input (two more scoring passes over each test split): "
                "all (base too), last (the final stage only), none"})
    resume: bool = field(default=True, metadata={
        "help": "continue a killed run in output_dir after its last finished stage (a finished run is not redone); "
                "false starts over"})
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb ..."})
    stage_cache: str | None = field(default=None, metadata={
        "help": "a folder of finished stages shared between runs: a run whose settings agree with an earlier run's up "
                "to a stage loads that stage's model and scores instead of training it again (a study's runs that "
                "differ only in their RL settings share one SFT; `bioreason study run` sets it). Single process only"})
    cpt: dict = field(default_factory=dict, metadata={
        "help": "CPT (projector alignment) settings: fields of TRL's SFTConfig, e.g. learning_rate, "
                "per_device_train_batch_size, and descriptions (own, or other: the content control). Defaults: "
                + json.dumps(STAGE_DEFAULTS["cpt"])})
    sft: dict = field(default_factory=dict, metadata={
        "help": "SFT settings: fields of TRL's SFTConfig (learning_rate, per_device_train_batch_size, "
                "num_train_epochs, packing ...) and of ModelConfig (use_peft, lora_r, lora_alpha ...). Defaults: "
                + json.dumps(STAGE_DEFAULTS["sft"])})
    grpo: dict = field(default_factory=dict, metadata={
        "help": "GRPO settings: fields of TRL's GRPOConfig (learning_rate, per_device_train_batch_size = prompts x "
                "num_generations, num_generations, max_completion_length, temperature, beta, loss_type ...), of "
                "ModelConfig (use_peft, lora_r ...), projectors_trainable, and rewards (names from "
                "bioreason.training.rewards, summed). GRPO leaves the projectors as SFT left them by default: "
                "trained in full by RL's few noisy updates they moved the features and cost 0.06-0.34 ID accuracy "
                "(docs/BRIDGE.md). Defaults: " + json.dumps(STAGE_DEFAULTS["grpo"])})


def field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls) if f.init}


def section_keys(stage: str) -> set[str]:
    """The keys a stage's section takes: its TRL config's fields (and GRPO's reward fields), plus the adaptation
    fields of ModelConfig for the stages that adapt the LLM."""
    keys = set().union(*(field_names(cls) for cls in SECTION_CLASSES[stage]))
    return (keys | (STAGE_MODEL_FIELDS if stage != "cpt" else set())) - PIPELINE_OWNED


def field_type(stage: str, key: str) -> type | None:
    """The scalar type (int, float, bool) a section key's field declares, or None for any other."""
    import types
    import typing

    for cls in (*SECTION_CLASSES[stage], ModelArguments):
        try:
            hint = typing.get_type_hints(cls).get(key)
        except Exception:  # a forward reference TRL cannot resolve: no type to check against
            continue
        if hint is None:
            continue
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next((a for a in typing.get_args(hint) if a is not type(None)), None)
        return hint if hint in (int, float, bool) else None
    return None


def typed_value(stage: str, key: str, value):
    """A section value as its field's type: YAML 1.1 reads `1e-4` as a string, which trained as learning rate
    '1e-4' until the optimizer failed; a value of the wrong kind (`learning_rate: fast`) is refused here, in one
    line, as `--print-config` shows it, instead of deep inside the trainer."""
    kind = field_type(stage, key)
    if kind is None or value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and kind in (int, float):
        try:
            number = float(value)
            if kind is float or number.is_integer():
                return kind(number)
        except ValueError:
            pass
    raise ValueError(f"pipeline: `{stage}.{key}` must be {'an' if kind is int else 'a'} {kind.__name__}, "
                     f"not {value!r}")


def check_sections(p: PipelineArguments, model_args: ModelArguments) -> None:
    """Refuse, before any work, a section key no stage field has, a value of the wrong type (numbers given as strings
    are converted), per-stage settings given at the top level, and an unknown stage."""
    unknown = [s for s in p.stages if s not in ("cpt", "sft", "grpo")]
    if unknown:
        raise ValueError(f"pipeline: unknown stages {unknown} in stages {p.stages}; available: cpt, sft, grpo")
    curve = list(p.curve_splits or [])
    if "validation" not in curve or set(curve) - set(EVAL_SPLITS):
        raise ValueError(f"pipeline: curve_splits {curve} must hold validation (where checkpoints are chosen) and "
                         f"only {', '.join(EVAL_SPLITS)}")
    if not p.score_test_splits and set(curve) - {"validation"}:
        raise ValueError(f"pipeline: curve_splits {curve} score test splits along training, but score_test_splits "
                         "is false (a run that chooses leaves them unread); drop them or score the test splits")
    for stage in ("cpt", "sft", "grpo"):
        section = getattr(p, stage) or {}
        if not isinstance(section, dict):
            raise ValueError(f"pipeline: `{stage}` is a section of settings (a mapping), not {section!r}")
        allowed = section_keys(stage)
        for key in section:
            if key in PIPELINE_OWNED:
                raise ValueError(f"pipeline: `{stage}.{key}` is set for every stage by the pipeline; set it at the "
                                 f"top level" + (" (the budget: sft_examples / rl_examples / cpt_examples)"
                                                 if key == "max_train_examples" else ""))
            if key not in allowed:
                near = difflib.get_close_matches(key, sorted(allowed), n=3)
                raise ValueError(f"pipeline: `{stage}.{key}` is not a {stage} setting"
                                 + (f"; did you mean {', '.join(near)}?" if near else ""))
            section[key] = typed_value(stage, key, section[key])
    try:  # the alignment settings' values, before the base model is scored
        cpt.AlignArguments(**{k: v for k, v in (p.cpt or {}).items() if k in field_names(cpt.AlignArguments)})
    except ValueError as err:
        raise ValueError(f"pipeline: {err}") from None
    defaults = ModelArguments()
    for key in sorted(STAGE_MODEL_FIELDS):
        if getattr(model_args, key) != getattr(defaults, key):
            raise ValueError(f"pipeline: `{key}` is set per stage: put it under sft: or grpo:")
    if not model_args.llm_trainable:
        raise ValueError("pipeline: every SFT / GRPO stage adapts the LLM (through LoRA with use_peft); "
                         "llm_trainable: false is for the stage scripts")


def stage_arguments(p: PipelineArguments, model_args: ModelArguments, stage: str, precision: Precision):
    """(TRL config, ModelArguments, CPT / GRPO recipe arguments or None) of one stage: the stage's defaults, then its
    section, on top of what the pipeline sets for every stage."""
    section = resolved_sections(p)[stage]
    config_class = SECTION_CLASSES[stage][0]
    config_keys = field_names(config_class)
    common = trainer_common(p, stage, precision)
    config = config_class(**{**common, **{k: v for k, v in section.items() if k in config_keys}})
    stage_model = replace(model_args, **{k: v for k, v in section.items() if k in STAGE_MODEL_FIELDS})
    recipe = None
    if stage == "cpt":
        recipe = cpt.CPTRecipeArguments(mode="align", evaluate=False, resume=True,
                                        **{k: v for k, v in section.items() if k in field_names(cpt.AlignArguments)})
    if stage == "grpo":
        recipe = grpo.GRPORecipeArguments(**{k: v for k, v in section.items()
                                             if k in field_names(grpo.GRPORecipeArguments)})
    return config, stage_model, recipe


def resolved_sections(p: PipelineArguments) -> dict:
    """Each stage's section with its defaults filled in, as the run used it (run_config.json, the study)."""
    return {stage: {**STAGE_DEFAULTS[stage], **(getattr(p, stage) or {})} for stage in ("cpt", "sft", "grpo")}


class PeriodicEval(TrainerCallback):
    """Evaluates the validation split every N optimizer steps; the points form the curve in metrics.json. The last
    step is left to the stage's own evaluation, which the pipeline adds to the curve (scoring the same model twice
    costs time). Each point also goes into the trainer's log history, which a checkpoint saves and a resumed stage
    restores, so a stage resumed midway keeps the points of the steps before its checkpoint."""

    KEY = "pipeline_curve_point"

    def __init__(self, every: int, evaluate, stage: str):
        self.every, self.evaluate, self.stage, self.points = every, evaluate, stage, []

    def on_train_begin(self, args, state, control, **kwargs):  # after a resume: the points the checkpoint holds
        self.points = [log[self.KEY] for log in state.log_history if self.KEY in log]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step >= state.max_steps:
            return
        if self.every and state.global_step % self.every == 0 and state.is_world_process_zero:
            point = {"stage": self.stage, "step": state.global_step, **self.evaluate(model)}
            self.points.append(point)
            state.log_history.append({self.KEY: point, "step": state.global_step})


def trainer_common(p: PipelineArguments, stage: str, precision: Precision) -> dict:
    """What the pipeline sets in every stage's TRL config (a section may change all but the first four): each stage
    trains in `checkpoints/STAGE/`, where its newest checkpoint lets a killed stage resume midway."""
    return {"output_dir": os.path.join(p.output_dir, "checkpoints", stage), "use_cpu": not _cuda(),
            "bf16": precision.bf16, "seed": p.seed, "report_to": p.report_to,
            "logging_steps": 1, "gradient_checkpointing": False, "num_train_epochs": 1, "disable_tqdm": False,
            **({"save_strategy": "steps", "save_steps": p.checkpoint_every_steps, "save_total_limit": 1}
               if p.checkpoint_every_steps else {"save_strategy": "no"})}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


SHOWN = ("n", "accuracy", "accuracy_lo", "accuracy_hi", "macro_f1", "macro_f1_lo", "macro_f1_hi", "format_rate",
         "prediction_rate", "accuracy_swapped", "reliance", "reliance_lo", "reliance_hi",
         "accuracy_swapped_cross_label", "reliance_cross_label", "reliance_cross_label_lo", "reliance_cross_label_hi")


def strip(metrics: dict) -> dict:
    """What a stage record shows of a split's metrics (per-class F1 and per-record vectors stay out)."""
    return {k: v for k, v in metrics.items() if k in SHOWN}


def curve_point(metrics: dict) -> dict:
    """A split's scores at a periodic point: what a stage record shows, and the per-record `correct` vector, so two
    points of one run (the step chosen on validation against the last, `study_report.curve_pairs`) compare paired on
    the same records."""
    return {**strip(metrics), **({"correct": list(metrics["correct"])} if "correct" in metrics else {})}


def stage_record(name: str, evaluated: dict, previous: dict | None, **fields) -> dict:
    """A stage's record: its scores per held-out split, `correct` (1 / 0 per record, the same records for every
    stage) and `vs_previous`, the paired comparison with the stage before it on each split."""
    from bioreason.evaluation.intervals import paired_comparison

    record = {"name": name, **{key: strip(evaluated.get(key, {})) for key in EVAL_SPLITS}, **fields,
              "correct": {key: list(evaluated[key]["correct"]) for key in EVAL_SPLITS
                          if "correct" in evaluated.get(key, {})}}
    if previous is not None:
        record["vs_previous"] = {
            key: {"stage": previous["name"], **paired_comparison(previous["correct"][key], record["correct"][key],
                                                                 seed=0)}
            for key in record["correct"] if key in previous.get("correct", {})
            and len(previous["correct"][key]) == len(record["correct"][key])}
    return record


def run(p: PipelineArguments, model_args: ModelArguments, data: DataArguments) -> dict:
    check_sections(p, model_args)
    stage_budgets(p)  # a budget that cannot be split is refused before anything loads
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
    sections = resolved_sections(p)
    write_json(os.path.join(p.output_dir, "run_config.json"),  # the LLM's source is in the model's config
               {"dataset": data.dataset, "pipeline": {**vars(p), **sections}, "model": vars(model_args),
                "data": vars(data), "precision": precision.as_dict(), "torch_threads": torch.get_num_threads()})
    with PartialState().main_process_first():
        dataset, cells = load_task(data)
    if state.done:
        print(f"resuming {p.output_dir} after {', '.join(state.done)}", flush=True)
    model, processor = state.load_model(model_args)
    if any(stage in p.stages for stage in ("sft", "grpo")):  # trained on the task: the saved model carries it
        processor.task = task_spec(dataset)
    stages, curve = state["stages"], state["curve"]
    baselines = state.get("baselines")
    if baselines is None:
        baselines = baseline_metrics(model, processor, dataset, cells, data, bf16=precision.bf16,
                                     keys=tuple(EVAL_SPLITS) if p.score_test_splits else ("validation",))
        state.update(baselines=baselines)
    print("baselines: " + baseline_line(baselines), flush=True)

    def evaluate(m):  # the periodic curve: validation (where checkpoints are chosen), the test splits if asked
        metrics = evaluate_splits(m, processor, dataset, cells, data, bf16=precision.bf16,
                                  keys=tuple(p.curve_splits), reliance=())
        return {k: curve_point(v) for k, v in metrics.items()}

    def score(m, stage: str) -> dict:  # after a stage: every held-out split, reliance where the setting asks
        if not p.score_test_splits:  # a run that chooses: its test splits stay unread
            return evaluate_splits(m, processor, dataset, cells, data, bf16=precision.bf16, keys=("validation",),
                                   reliance=())
        return evaluate_splits(m, processor, dataset, cells, data, bf16=precision.bf16,
                               reliance=reliance_keys(p, stage))

    if p.evaluate_base and "base" not in state.done:
        start = time.time()
        evaluated = score(model, "base")
        stages.append(stage_record("base", evaluated, None, steps=0, seconds=round(time.time() - start, 1)))
        state.update(stages=stages)
    n_sft, n_rl = stage_budgets(p)
    cache = StageCache(p.stage_cache) if p.stage_cache else None
    if cache and PartialState().num_processes > 1:
        raise ValueError("stage_cache works in single-process runs; unset it under torchrun / accelerate launch")
    run_key = {**config_key(p, model_args, data), "precision": precision.name}
    budgets = {"cpt": p.cpt_examples, "sft": n_sft, "grpo": n_rl}
    for stage in p.stages:
        if stage in state.done:
            continue
        if budgets[stage] == 0 and stage in ("sft", "grpo"):  # a budget split's end point (rl_fraction 0 or 1)
            print(f"{stage}: 0 {'prompts' if stage == 'grpo' else 'examples'} in this budget; stage skipped",
                  flush=True)
            continue
        with contextlib.ExitStack() as held:
            entry = shared = None
            if cache:
                key = prefix_key(run_key, p.stages, stage, sections, budgets)
                entry = held.enter_context(cache.hold(stage, key))
                shared = entry.load()
            if shared:
                print(f"{stage}: loaded from the stage cache ({entry.path})", flush=True)
                model = entry.apply(model)  # the model this stage started from, with the stage's changes merged
                stages.append({**shared["record"], "shared_from": entry.path})
                curve.extend(shared["curve"])
            else:
                first_point = len(curve)
                keep = entry if entry and stage != p.stages[-1] else None  # a last stage serves no later stage
                model, record = _train_stage(p, model_args, data, stage, model, processor, precision,
                                             evaluate, score, curve, budgets[stage], stages[-1] if stages else None,
                                             keep=keep)
                stages.append(record)
                if keep:
                    keep.store_record(record, curve[first_point:])
        kill_point("stage-trained")
        state.finish_stage(stage, model, processor, stages=stages, curve=curve)  # stages[-1] is this stage
        kill_point("stage-saved")
    metrics = {"baselines": baselines, "stages": stages, "curve": curve, "precision": precision.as_dict(),
               "scored_splits": list(EVAL_SPLITS) if p.score_test_splits else ["validation"],
               "budget": {"sft_examples": n_sft, "sft_epochs": sections["sft"]["num_train_epochs"],
                          "rl_examples": n_rl, "sft_lora_r": sections["sft"]["lora_r"],
                          "grpo_lora_r": sections["grpo"]["lora_r"]}}
    # Save
    if PartialState().is_main_process:  # metrics.json last: its presence says the run finished
        if p.save_model:
            final = os.path.join(p.output_dir, "final")
            default_freeze_policy(base_model(model))  # what the saved model trains is the default, not GRPO's
            save_final(base_model(model), processor, final)
            from bioreason.evaluation.report import write_report

            write_report(p.output_dir, metrics)
            from bioreason.hub.cards import trained_card

            card = trained_card(base_model(model), metrics, dataset_name=data.dataset, repo_id=final,
                                task=processor.task, name=os.path.basename(os.path.normpath(p.output_dir)))
            card.save(os.path.join(p.output_dir, "README.md"))
            card.save(os.path.join(final, "README.md"))
        write_json(os.path.join(p.output_dir, "metrics.json"), metrics)
        state.finish(metrics)
    return metrics


def _train_stage(p: PipelineArguments, model_args: ModelArguments, data: DataArguments, stage: str, model,
                 processor, precision: Precision, evaluate, score, curve: list, budget: int,
                 previous: dict | None, keep: StageEntry | None = None):
    """Train one stage from `model`; returns the merged model and the stage's record (appending its curve points).
    `keep`: a stage-cache entry that stores the stage's changes (its adapter, before the merge)."""
    set_seed(p.seed)  # each stage starts from the seed, so a resumed stage draws what the uninterrupted one drew
    stage_data = replace(data, max_train_examples=budget)
    periodic = PeriodicEval(p.eval_every_steps, evaluate, stage) if p.eval_every_steps else None
    callbacks = [periodic] if periodic else []
    config, stage_model, recipe = stage_arguments(p, model_args, stage, precision)
    newest = resume_checkpoint(config, True)  # a checkpoint of this stage, left by a killed attempt
    if newest:
        print(f"{stage}: continuing from {newest}", flush=True)
    # the stage scripts train, resuming from that checkpoint; the pipeline scores every stage the same way, below
    if stage == "cpt":
        result = cpt.run(recipe, stage_model, stage_data, config, model=model, processor=processor,
                         callbacks=callbacks)
    elif stage == "sft":  # each stage script prepares the model it is given (freeze policy, its own LoRA adapter)
        result = sft.run(sft.SFTRecipeArguments(evaluate=False, resume=True), stage_model, stage_data, config,
                         model=model, processor=processor, callbacks=callbacks)
    else:
        result = grpo.run(replace(recipe, evaluate=False, resume=True), stage_model, stage_data, config, model=model,
                          processor=processor, callbacks=callbacks)
    if periodic:
        curve.extend(periodic.points)
    model = result.pop("model")
    result.pop("processor")
    if keep is not None and PartialState().is_main_process:
        keep.store_changes(model)  # the adapter itself, before the merge
    # merge this stage's adapter before it is scored: the scores are the saved model's (`merged`), and the next stage
    # starts from these weights
    model = merged(model)
    if PartialState().is_main_process:
        result.update(score(model, stage))
    record = stage_record(stage, result, previous, steps=result["steps"], seconds=result["seconds"],
                          **{k: result[k] for k in ("mean_reward", "zero_advantage_steps", "stopped_early",
                                                     "dynamic_sampling") if k in result})
    if p.eval_every_steps:
        curve.append({"stage": stage, "step": result["steps"],
                      **{key: {**record[key], **({"correct": record["correct"][key]} if key in record["correct"]
                                                  else {})} for key in p.curve_splits}})
    return model, record


def reliance_keys(p: PipelineArguments, stage: str) -> tuple[str, ...]:
    """The test splits on which `stage` (or "base") measures its reliance, by the `reliance` setting."""
    if p.reliance not in ("all", "last", "none"):
        raise ValueError(f"pipeline: reliance must be all, last or none, not {p.reliance!r}")
    wanted = p.reliance == "all" or (p.reliance == "last" and p.stages and stage == p.stages[-1])
    return tuple(TEST_SPLITS) if wanted else ()


def baseline_line(baselines: dict) -> str:
    """One line: each baseline's accuracy on the splits it was scored on (ID / OOD, or validation alone)."""
    names = {"validation": "validation", "id": "ID", "ood": "OOD"}
    return "; ".join(f"{name} " + " / ".join(f"{names[k]} {b[k]['accuracy']:.3f}" for k in names
                                            if k in b and (k != "validation" or "id" not in b))
                     for name, b in baselines.items() if any(k in b for k in names))


def stage_budgets(p: PipelineArguments) -> tuple[int, int]:
    """(SFT examples, RL prompts): explicit budgets, else `total_examples` split by `rl_fraction`."""
    if not 0 <= p.rl_fraction <= 1:
        raise ValueError(f"pipeline: rl_fraction must lie in [0, 1], not {p.rl_fraction}")
    n_sft = p.sft_examples if p.sft_examples is not None else int(round(p.total_examples * (1 - p.rl_fraction)))
    n_rl = p.rl_examples if p.rl_examples is not None else p.total_examples - n_sft
    return (n_sft if "sft" in p.stages else 0), (n_rl if "grpo" in p.stages else 0)


def planned_work(config: dict) -> float:
    """A pipeline config's training work in examples, to start a study's longest runs first
    (`bioreason.evaluation.study.longest_first`): CPT examples, SFT examples x epochs, and each RL prompt x its samples
    (`num_generations`: each is generated and trained on). It ranks runs, it does not time them."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(PipelineArguments)}
    p = PipelineArguments(**{k: v for k, v in config.items() if k in names})
    sections = resolved_sections(p)
    n_sft, n_rl = stage_budgets(p)
    cpt = p.cpt_examples if "cpt" in p.stages else 0
    return (cpt + n_sft * float(sections["sft"]["num_train_epochs"])
            + n_rl * int(sections["grpo"]["num_generations"]))


def verify_run_folder(path: str, stages: tuple[str, ...] = ("cpt", "sft", "grpo")) -> dict:
    """Check a pipeline run folder has what the README promises; returns its metrics. Used by tests and CI."""
    import json

    with open(os.path.join(path, "metrics.json"), encoding="utf-8") as fh:
        metrics = json.load(fh)
    names = [s["name"] for s in metrics["stages"] if s["name"] != "base"]
    if tuple(names) != tuple(stages):
        raise ValueError(f"{path}: stages {names}, expected {list(stages)}")
    scored = metrics.get("scored_splits", list(EVAL_SPLITS))  # validation only: a run that chose a config
    for i, stage in enumerate(metrics["stages"]):
        missing = {"name", "validation", "id", "ood", "steps", "seconds"} - set(stage)
        if missing:
            raise ValueError(f"{path}: stage {stage.get('name')} lacks {sorted(missing)}")
        for key in EVAL_SPLITS:
            if key not in scored:
                if stage[key]:
                    raise ValueError(f"{path}: stage {stage['name']} has {key} scores in a run that scored "
                                     f"{', '.join(scored)} only")
                continue
            need = {"n", "prediction_rate",
                    *(f"{m}{end}" for m in ("accuracy", "macro_f1") for end in ("", "_lo", "_hi"))}
            if key != "validation" and (i == len(metrics["stages"]) - 1 or "reliance" in stage[key]):
                # reliance is measured on the test splits: after the last stage always, elsewhere by `reliance`
                need |= {f"{m}{end}" for m in ("reliance", "reliance_cross_label") for end in ("", "_lo", "_hi")}
            absent = need - set(stage[key])
            if absent and stage[key].get("n"):
                raise ValueError(f"{path}: stage {stage['name']} {key} lacks {sorted(absent)}")
        if i and not set(scored) <= set(stage.get("vs_previous", {})):
            raise ValueError(f"{path}: stage {stage['name']} lacks its paired comparison with the stage before")
    missing = {"majority", "probe", "input_probe"} - set(metrics.get("baselines", {}))
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
    p, model_args, data = parse_arguments(ARGUMENTS, argv, renamed=RENAMED)
    return run(p, model_args, data)


if __name__ == "__main__":
    main()
