"""What the stage scripts share: argument dataclasses (every YAML key is one of their fields, parsed by TRL's
`TrlParser`), model / data loading, freeze policy and LoRA, ID / OOD evaluation, atomic checkpoints and saves."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import GRPOConfig, ModelConfig, SFTConfig

from bioreason.data.records import EVAL_SPLITS, TEST_SPLITS
from bioreason.data.tasks import replace_dir
from bioreason.evaluation.scoring import DEFAULT_NORMALIZATION, evaluate_records, sample_split
from bioreason.model.precision import AUTO, Precision, choose_bf16
from bioreason.training.faults import kill_point

# TRL 1.16 reads `model.is_gradient_checkpointing`, which transformers 5.25 deprecates: a warning about TRL's code on
# every GRPO step, not about the user's run (TRL's own fix will remove the call)
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

BF16_HELP = ("auto (default): bf16 autocast where the device computes bf16 natively (CUDA with bf16, a CPU with "
             "AMX-BF16 / AVX512-BF16), fp32 elsewhere; true / false force it")


@dataclass
class ModelArguments(ModelConfig):
    """TRL's `ModelConfig` (the model a stage starts from, its revision, dtype and attention; `use_peft` + `lora_*`;
    `load_in_4bit` / `load_in_8bit`), plus what bioreason adds: composing a model from parts when there is no
    `model_name_or_path`, which parts train, and the frozen-encoder feature cache. Every field keeps TRL's name and
    meaning; defaults differ where the seed study's recipe does (LoRA alpha 2 x rank, no LoRA dropout)."""

    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (default 2 x lora_r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA path"})
    llm: str = field(default="default", metadata={
        "help": "without model_name_or_path: the LLM to compose from (hub id, folder or .gguf; 'default' = "
                "SmolLM2-135M)"})
    encoders: list[str] = field(default_factory=lambda: ["protein=antiberty"],
                                metadata={"help": "without model_name_or_path: MODALITY=TYPE[:SOURCE] entries"})
    projector: str = field(default="resampler", metadata={
        "help": "linear | mlp2x_gelu | resampler | mean: maps encoder outputs to LLM embeddings"})
    num_queries: int = field(default=32, metadata={
        "help": "resampler: learned query tokens per input (its output length)"})
    encoders_trainable: bool | None = field(default=None, metadata={
        "help": "true trains every encoder; false freezes every encoder (trainable-by-design ones such as "
                "`expression` too: a fixed featurizer, the features the probe baseline reads); unset keeps each "
                "encoder's default (pretrained encoders frozen, trainable-by-design ones trained)"})
    projectors_trainable: bool = field(default=True, metadata={"help": "train the projectors"})
    llm_trainable: bool = field(default=True, metadata={
        "help": "train the LLM (through LoRA with use_peft, else in full)"})
    feature_cache: str = field(default="disk", metadata={
        "help": "frozen-encoder outputs computed once per unique input: off | memory | disk (memory + files)"})
    feature_cache_dir: str | None = field(default=None, metadata={"help": "default $BIOREASON_CACHE/features"})
    feature_cache_max_gb: float = field(default=20.0, metadata={
        "help": "bound of the disk cache; the least recently used entries go first (bioreason cache info|clear)"})

    def __post_init__(self):
        super().__post_init__()
        if self.lora_task_type != "CAUSAL_LM":
            raise ValueError(f"lora_task_type must be CAUSAL_LM for a BioReason model, not {self.lora_task_type!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, not {self.dtype!r}")


@dataclass
class DataArguments:
    dataset: str = field(default="benchmark:antibody_chain",
                         metadata={"help": "a task dataset folder, or benchmark:NAME (built on first use)"})
    data_root: str = field(default="runs/data", metadata={"help": "where benchmark:NAME datasets are built"})
    max_train_examples: int | None = field(default=None, metadata={
        "help": "train records a stage sees (default: the whole train split)"})
    balance_labels: bool = field(default=True, metadata={
        "help": "draw train records with every label in equal shares (rare labels repeat); a closed label set only. "
                "Without it SFT learns the label prior before the encoder (docs/BRIDGE.md)"})
    max_eval_examples: int | None = field(default=None, metadata={
        "help": "records scored per held-out split (validation, id_test, ood_test): null (default) scores every "
                "record; N scores a fixed, label-stratified subset of N where a split is larger (the shipped configs "
                "use at least 200)"})
    eval_mode: str = field(default="likelihood", metadata={
        "help": "likelihood: the label with the highest log-likelihood; generate: parse generated answers"})
    likelihood_normalization: str = field(default=DEFAULT_NORMALIZATION, metadata={
        "help": "likelihood scoring: mean (per-token log-probability of a label's answer) or sum (favours labels "
                "of fewer tokens; docs/EVALUATION.md)"})
    use_reasoning: bool = field(default=True, metadata={
        "help": "train on the records' reasoning text before the answer, where they have one"})
    task_seed: int = field(default=0, metadata={
        "help": "seed of the benchmark build, the train draw and the evaluation subset"})


class AutoPrecisionMixin:
    """TRL's configs with `bf16: auto | true | false` (default auto), resolved by
    `bioreason.model.precision.choose_bf16` before `TrainingArguments` sees it; the decision and its reason stay on
    the config as `precision`."""

    precision: Precision

    def __post_init__(self):
        device = "cpu" if self.use_cpu or not torch.cuda.is_available() else "cuda"
        self.precision = choose_bf16(self.bf16, device)
        self.bf16 = self.precision.bf16
        # TRL's configs default the deprecated `gradient_checkpointing` to True, so transformers 5 warned on every run
        # about a field nobody set: resolve it into `activation_checkpointing` here (same behaviour, no warning)
        if getattr(self, "activation_checkpointing", False) is None and self.gradient_checkpointing is not None:
            self.activation_checkpointing = self.gradient_checkpointing
            self.activation_checkpointing_kwargs = (getattr(self, "activation_checkpointing_kwargs", None)
                                                    or self.gradient_checkpointing_kwargs)
        super().__post_init__()


PROJECTOR_LR_HELP = ("learning rate of the projectors, in their own optimizer group (LLaVA's mm_projector_lr); "
                     "null: learning_rate. A freshly initialised projector under a LoRA-rate step left SFT at one "
                     "answer where 10x the LoRA rate learned (docs/BRIDGE.md)")


@dataclass
class BioSFTConfig(AutoPrecisionMixin, SFTConfig):
    bf16: str = field(default=AUTO, metadata={"help": BF16_HELP})
    projector_learning_rate: float | None = field(default=None, metadata={"help": PROJECTOR_LR_HELP})


@dataclass
class BioGRPOConfig(AutoPrecisionMixin, GRPOConfig):
    bf16: str = field(default=AUTO, metadata={"help": BF16_HELP})
    projector_learning_rate: float | None = field(default=None, metadata={"help": PROJECTOR_LR_HELP})


def precision_record(config) -> dict:
    """What a run folder records about its precision (configs built without the mixin resolve as given)."""
    precision = getattr(config, "precision", None) or choose_bf16(bool(config.bf16),
                                                                  "cpu" if config.use_cpu else None)
    return precision.as_dict()


def load_task(data: DataArguments):
    """(DatasetDict, cells AnnData or None) of the config's dataset (`bioreason.data.tasks.open_task`)."""
    from bioreason.data.tasks import open_task

    return open_task(data.dataset, data.data_root, data.task_seed)


def train_records(dataset, data: DataArguments):
    """The train records a stage sees: `max_train_examples` of them (default all), label-balanced when
    `balance_labels` and the task has a closed label set, else a seeded shuffle."""
    ds = dataset["train"]
    n = len(ds) if data.max_train_examples is None else data.max_train_examples
    if data.balance_labels and len(ds) and ds[0].get("label_set") and len(set(ds["answer"])) > 1:
        from bioreason.data.balance import balanced_indices

        return ds.select(balanced_indices(ds["answer"], n, seed=data.task_seed))
    ds = ds.shuffle(seed=data.task_seed)
    return ds.select(range(min(n, len(ds))))


def load_model(model_args: ModelArguments):
    """`(model, processor)` from `model_name_or_path` (a BioReason folder) or composed from parts, with the freeze
    policy and, with `use_peft`, LoRA applied."""
    from transformers import AutoModelForCausalLM, AutoProcessor

    import bioreason  # noqa: F401  (Auto class registration)
    from bioreason.model.composition import compose, default_attn_implementation, default_llm_path

    dtype = None if model_args.dtype == "auto" else getattr(torch, model_args.dtype)
    if model_args.model_name_or_path:
        attn = model_args.attn_implementation or default_attn_implementation()
        kwargs: dict[str, Any] = {"dtype": dtype or "auto", "revision": model_args.model_revision,
                                  "attn_implementation": attn}
        if model_args.load_in_4bit or model_args.load_in_8bit:
            from bioreason.training.adaptation import quantization_config

            kwargs["quantization_config"] = quantization_config(
                bits=4 if model_args.load_in_4bit else 8, quant_type=model_args.bnb_4bit_quant_type,
                nested=model_args.use_bnb_nested_quant, storage=model_args.bnb_4bit_quant_storage)
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
        processor = AutoProcessor.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    else:
        if model_args.load_in_4bit or model_args.load_in_8bit:
            raise ValueError("load_in_4bit / load_in_8bit quantize a saved model: compose it first, then pass "
                             "model_name_or_path")
        llm = default_llm_path() if model_args.llm == "default" else model_args.llm
        encoders = dict(e.split("=", 1) for e in model_args.encoders)
        projector = model_args.projector
        if projector == "resampler":
            projector = {"type": "resampler", "options": {"num_queries": model_args.num_queries}}
        model, processor = compose(llm=llm, encoders=encoders, projector=projector, dtype=dtype,
                                   attn_implementation=model_args.attn_implementation)
    apply_freeze_policy(model, model_args)
    enable_feature_cache(model, model_args)
    if model_args.use_peft:
        from bioreason.training.adaptation import apply_lora

        model = apply_lora(model, **lora_options(model_args))
    return model, processor


def apply_freeze_policy(model, model_args: ModelArguments) -> None:
    """What trains, from `encoders_trainable` (true / false / unset), `projectors_trainable` and `llm_trainable`."""
    model.set_trainable(encoders=bool(model_args.encoders_trainable), projectors=model_args.projectors_trainable,
                        llm=model_args.llm_trainable)
    if model_args.encoders_trainable is False:
        for modality in model.config.modalities:
            model.set_encoder_trainable(modality, False)


def lora_options(model_args: ModelArguments) -> dict[str, Any]:
    """`apply_lora` keywords from `ModelConfig`'s LoRA fields."""
    options: dict[str, Any] = {"r": model_args.lora_r, "alpha": model_args.lora_alpha,
                               "dropout": model_args.lora_dropout, "use_rslora": model_args.use_rslora,
                               "use_dora": model_args.use_dora,
                               "extra_modules_to_save": model_args.lora_modules_to_save,
                               "target_parameters": model_args.lora_target_parameters}
    if model_args.lora_target_modules:
        targets = model_args.lora_target_modules
        options["target_modules"] = (targets,) if isinstance(targets, str) else tuple(targets)
    return options


def enable_feature_cache(model, model_args: ModelArguments) -> None:
    """Apply `model_args.feature_cache` to a BioReason model (or one under a PEFT wrapper)."""
    from bioreason.model.feature_cache import default_cache_dir

    model = base_model(model)
    if model_args.feature_cache in ("off", False, "False", "false"):  # YAML reads a bare `off` as false
        model.disable_feature_cache()
    elif model_args.feature_cache in ("memory", "disk"):
        directory = None
        if model_args.feature_cache == "disk":
            directory = model_args.feature_cache_dir or default_cache_dir()
        model.enable_feature_cache(directory, max_disk_bytes=int(model_args.feature_cache_max_gb * (1 << 30)))
    else:
        raise ValueError(f"feature_cache must be off, memory or disk, not {model_args.feature_cache!r}")


def release_from_trainer(model) -> None:
    """Make a model that an earlier trainer trained ready for a new trainer (our trainers call it on the model they
    are given, so a pipeline stage, or a user chaining `sft.run` into `grpo.run`, starts clean).

    accelerate marks a model it prepared (`_is_accelerate_prepared`) and wraps its forward in bf16 autocast
    (`_original_forward`); the next stage wraps the model in PEFT, whose attribute lookups fall through to the model
    inside, so the next accelerator saw the old mark, skipped preparing the new model, and trained it without
    autocast: every pipeline stage after CPT ran in fp32 where bf16 was chosen (an SFT step 3.2 s instead of 1.6 s on
    a Zen 5 EPYC; docs/BRIDGE.md). Both marks go, and so do the instance-level forward patches (accelerate's wrapper,
    the LM heads TRL and `bioreason.model.lm_head` install), which the new trainer installs again."""
    for module in {id(m): m for m in (model, base_model(model))}.values():
        for name in ("_is_accelerate_prepared", "_original_forward", "forward"):
            module.__dict__.pop(name, None)


def base_model(model):
    """The BioReason model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def autocast_for(model, bf16: bool) -> torch.autocast:
    """bf16 autocast on the model's device when `bf16` (the run's precision decision), else a no-op context."""
    return torch.autocast(device_type=next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=bf16)


def evaluate_splits(model, processor, dataset, cells, data: DataArguments, bf16: bool = False,
                    keys: tuple[str, ...] = tuple(EVAL_SPLITS), reliance: tuple[str, ...] = tuple(TEST_SPLITS)) -> dict:
    """`{key: metrics}` on the held-out splits `keys` (validation, id, ood): accuracy and macro-F1 with intervals,
    prediction rates, and `correct` (1 / 0 per record, in `eval_splits` order, for paired comparisons); on the
    `reliance` keys also both reliance figures. `bf16` runs them under bf16 autocast (on CPUs with AMX /
    AVX-512-BF16 that is several times faster than fp32)."""
    kill_point("evaluate")
    with autocast_for(model, bf16):
        return _evaluate_splits(model, processor, dataset, cells, data, keys, reliance)


def eval_splits(dataset, data: DataArguments, keys: tuple[str, ...] = tuple(EVAL_SPLITS)) -> dict[str, list[dict]]:
    """`{"validation": records, "id": records, "ood": records}`: the examples every score of a run is computed on
    (whole splits, or the fixed label-stratified subsets of `max_eval_examples`)."""
    return {key: sample_split(dataset, EVAL_SPLITS[key], data.max_eval_examples, seed=data.task_seed)
            for key in keys}


def _evaluate_splits(model, processor, dataset, cells, data: DataArguments, keys: tuple[str, ...],
                     reliance: tuple[str, ...]) -> dict:
    from bioreason.evaluation.baselines import model_predictor, reliance_scores
    from bioreason.evaluation.scoring import correct_vector

    out = {}
    for key, records in eval_splits(dataset, data, keys).items():
        if not records:
            out[key] = {"n": 0}
            continue
        split = EVAL_SPLITS[key]
        metrics = evaluate_records(base_model(model), processor, records, mode=data.eval_mode, cells=cells,
                                   desc=f"evaluate {split}", normalization=data.likelihood_normalization)
        metrics["correct"] = correct_vector(metrics.pop("predictions"))
        if key in reliance:
            predict = model_predictor(base_model(model), processor, mode=data.eval_mode, cells=cells,
                                      desc=f"reliance {split}", normalization=data.likelihood_normalization)
            metrics.update(reliance_scores(predict, records, metrics["correct"], seed=data.task_seed))
        out[key] = metrics
    return out


def baseline_metrics(model, processor, dataset, cells, data: DataArguments, bf16: bool = False) -> dict:
    """`{"majority": {...}, "probe": {...}}` on the same held-out examples as the model's scores; the probe is fit
    on the whole train split, on the model's encoders (through its feature cache, under the run's autocast so
    training hits the same entries)."""
    from bioreason.evaluation.baselines import baseline_scores

    with autocast_for(model, bf16):
        return baseline_scores(base_model(model), processor, [dict(r) for r in dataset["train"]],
                               eval_splits(dataset, data), cells, seed=data.task_seed)


def remove_staging(folder: str) -> None:
    """Delete what a killed save left in `folder`: staging folders (`.tmp-*`, `.staging`) and temporary files
    (`*.tmp`). Only for a folder this process holds (`run_folder`): another writer's staging would go too."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith((".tmp-", ".staging")) or name.endswith(".tmp"):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)


@contextlib.contextmanager
def run_folder(output_dir: str):
    """Hold `output_dir` for this run (on the main process; the others only run inside it): an exclusive lock
    (released by the OS however the process ends, SIGKILL included), so a second process on the same folder fails at
    once instead of both writing it; the staging a killed save left there is removed."""
    import fcntl

    from accelerate import PartialState

    if not PartialState().is_main_process:
        yield
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, ".lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise OSError(f"{output_dir} is in use by another process (pid {fh.read().strip() or '?'}); "
                          "wait for it or use another output_dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        remove_staging(output_dir)
        yield


def save_failed(err: OSError, what: str, kept: str | None) -> OSError:
    """The one-line error of a save that failed (a full disk, a quota): what was not written and what is intact."""
    kept_text = f"{kept} is intact" if kept else "nothing earlier was there"
    return OSError(err.errno, f"could not write {what} ({err.strerror or err}); its staging files were removed and "
                              f"{kept_text}")


def save_final(model, processor, out: str, merge_lora: bool = True) -> None:
    """Save a loadable BioReason folder atomically; LoRA adapters are merged so `from_pretrained` needs no PEFT. A
    failed write (e.g. ENOSPC) removes its staging folder and leaves an earlier `out` as it was."""
    if merge_lora and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise save_failed(err, out, out if os.path.exists(out) else None) from err
    kill_point("final-staged")
    replace_dir(staging, out)


def write_json(path: str, data: dict) -> None:
    """Write JSON atomically (a temporary file renamed over `path`; on failure `path` keeps its old content)."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise save_failed(err, path, path if os.path.exists(path) else None) from err
    os.replace(tmp, path)


def is_projector_parameter(name: str) -> bool:
    """A projector's parameter, bare (`model.projectors.rna.*`) or under PEFT (`*.projectors.rna.modules_to_save.*`)."""
    return name.startswith("projectors.") or ".projectors." in name


class ProjectorLearningRateMixin:
    """`Trainer.create_optimizer` with the projectors' parameters moved into groups of their own at
    `args.projector_learning_rate` (each keeps its group's weight decay); the scheduler, built after, scales every
    group by the same factor. Without the setting the optimizer is transformers' own."""

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        rate = getattr(self.args, "projector_learning_rate", None)
        if rate is None or rate == self.args.learning_rate:
            return optimizer
        named = (model if model is not None else self.model).named_parameters()
        ids = {id(p) for n, p in named if p.requires_grad and is_projector_parameter(n)}
        for group in list(optimizer.param_groups):
            mine = [p for p in group["params"] if id(p) in ids]
            if mine:
                group["params"] = [p for p in group["params"] if id(p) not in ids]
                optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": mine,
                                           "lr": rate})
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
        return optimizer


class AtomicCheckpointMixin:
    """`Trainer._save_checkpoint` writes `checkpoint-N` in place, so a kill mid-write leaves a partial checkpoint that
    `resume_from_checkpoint=True` would pick up. Here it writes into `.staging/` and the finished folder is renamed
    into place after every process has written its part (RNG states are per process)."""

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import get_last_checkpoint, rotate_checkpoints

        run_dir = self._get_output_dir(trial=trial)
        staging = os.path.join(run_dir, ".staging")
        name = f"checkpoint-{self.state.global_step}"
        shutil.rmtree(os.path.join(staging, name), ignore_errors=True)  # a killed earlier attempt's leftovers
        self._get_output_dir = lambda trial=None: staging  # shadows the method for this one call
        try:
            super()._save_checkpoint(model, trial)
        except OSError as err:  # e.g. ENOSPC: drop the partial copy, keep the checkpoints already in place
            shutil.rmtree(os.path.join(staging, name), ignore_errors=True)
            raise save_failed(err, os.path.join(run_dir, name), get_last_checkpoint(run_dir)) from err
        finally:
            self.__dict__.pop("_get_output_dir", None)
        self.accelerator.wait_for_everyone()
        kill_point("checkpoint-staged")
        if self.args.should_save:
            replace_dir(os.path.join(staging, name), os.path.join(run_dir, name))
            rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit, use_mtime=False)
        self.accelerator.wait_for_everyone()


def resume_checkpoint(config, resume: bool) -> str | None:
    """The checkpoint a `resume: true` run continues from: the newest complete `checkpoint-N` in output_dir, or None
    (a run killed before its first checkpoint starts over rather than failing)."""
    from transformers.trainer_utils import get_last_checkpoint

    if not resume or not os.path.isdir(config.output_dir):
        return None
    return get_last_checkpoint(config.output_dir)


def recipe_arguments(recipe_class, config_class) -> tuple[type, ...]:
    """The dataclasses a stage script's config fills, in order (every YAML key is a field of one of them)."""
    return (recipe_class, ModelArguments, DataArguments, config_class)


def nest_dotted(config: dict, overrides: list[tuple[str, Any]] = ()) -> dict:
    """`{"sft.lora_r": 8}` -> `{"sft": {"lora_r": 8}}`, merged into any `sft:` section already there; then the
    overrides, the same way. One level: a section and its key."""
    out: dict = {}
    for key, value in [*config.items(), *overrides]:
        section, dot, name = key.partition(".")
        if not dot:  # (sections are copied: the caller's config stays as it was)
            if isinstance(value, dict):
                value = {**(out[key] if isinstance(out.get(key), dict) else {}), **value}
            out[key] = value
            continue
        if not isinstance(out.setdefault(section, {}), dict):
            raise ValueError(f"`{key}`: `{section}` is not a section of settings")
        out[section][name] = value
    return out


# Field names the stage scripts took before ModelConfig's (refused with their new name).
RENAMED = {"model_path": "model_name_or_path"}


def parse_arguments(arguments: tuple[type, ...], argv: list[str] | None,
                    renamed: dict[str, str] | None = None) -> tuple:
    """TRL's `TrlParser` over `--config FILE` and `--key value` arguments, where a key may also name a section's
    setting, `--sft.learning_rate 1e-4` (or `sft.learning_rate: 1e-4` in the file): those are folded into the
    section (a YAML value: numbers, booleans and lists parse) before TRL reads the config. A key of `renamed` (an
    older name) is refused with its new name."""
    import sys

    import yaml
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    dotted, rest, i = [], [], 0
    while i < len(argv):
        if argv[i].startswith("--") and "." in argv[i] and i + 1 < len(argv):
            dotted.append((argv[i][2:], yaml.safe_load(argv[i + 1])))
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    config: dict = {}
    if "--config" in rest:
        with open(rest[rest.index("--config") + 1], encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    for key in [*(a[2:] for a in rest if a.startswith("--")), *config]:
        if key in (renamed or {}):
            raise ValueError(f"`{key}` is now `{renamed[key]}`")
    parser = TrlParser(arguments)
    if "--config" not in rest:
        if dotted:
            raise ValueError(f"section settings such as {dotted[0][0]} need --config FILE")
        return parser.parse_args_and_config(args=rest)
    at = rest.index("--config") + 1
    merged = nest_dotted(config, dotted)
    if merged == config:
        return parser.parse_args_and_config(args=rest)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, encoding="utf-8") as fh:
        yaml.safe_dump(merged, fh, sort_keys=False)
    try:
        return parser.parse_args_and_config(args=[*rest[:at], fh.name, *rest[at + 1:]])
    finally:
        os.unlink(fh.name)


def recipe_main(run, arguments: tuple[type, ...], argv: list[str] | None) -> dict:
    """Parse `--config FILE` plus overrides into the recipe's dataclasses, run it, and save `final/` and
    `metrics.json` from the main process."""
    from accelerate import PartialState

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


def end_processes() -> None:
    """Under torchrun / accelerate: wait for the main process's saves, then close the process group (a rank that
    exited while its peer still wrote aborted once with gloo: 'terminate called without an active exception')."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from accelerate import PartialState

        PartialState().wait_for_everyone()
        dist.destroy_process_group()
