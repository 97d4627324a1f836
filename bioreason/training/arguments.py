"""The dataclasses a stage's config fills: every YAML key and `key=value` override is a field of one of them (TRL's
`ModelConfig`, `SFTConfig` and `GRPOConfig` extended with what bioreason adds). How a file and overrides reach them is
`bioreason.training.config`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import GRPOConfig, ModelConfig, SFTConfig

from bioreason.evaluation.scoring import DEFAULT_NORMALIZATION
from bioreason.model.precision import AUTO, Precision, choose_bf16

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
    projector_output_norm: str | None = field(default=None, metadata={
        "help": "fix each projected token's L2 norm: 'embedding' (the LLM's mean token-embedding norm), a number, or "
                "null (unscaled). Projector alignment (CPT) doubled the unscaled norm and the SFT after it did "
                "worse than SFT alone (docs/STUDY.md)"})
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
        if device == "cpu" and (self.fsdp or getattr(self, "deepspeed", None)):
            # accelerate shards only on accelerators: on CPU processes it drops the FSDP plugin and wraps the model
            # in DDP instead, with no message (seen: a 2-process gloo run "with FSDP2" trained DDP, reducer warnings,
            # unsharded optimizer.pt). Refuse rather than train something other than what was asked.
            raise ValueError("fsdp / deepspeed run on GPUs only (accelerate does not shard on CPU processes: it would "
                             "train with DDP instead); on CPU, leave them unset and launch with torchrun for DDP")
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


def recipe_arguments(recipe_class, config_class) -> tuple[type, ...]:
    """The dataclasses a stage script's config fills, in order (every YAML key is a field of one of them)."""
    return (recipe_class, ModelArguments, DataArguments, config_class)
