"""Model preparation, one path for every stage: load (a saved BioReason folder, or composed from parts), then
`prepare_model` applies the freeze policy, the frozen-encoder feature cache and the stage's LoRA adapter. The stage
scripts, the pipeline (which hands one model from stage to stage) and CPT alignment all go through it, so a change to
what trains reaches every path."""

from __future__ import annotations

from typing import Any

import torch

from bioreason.training.arguments import ModelArguments


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
        projector = {"type": model_args.projector, "options": {}}
        if model_args.projector == "resampler":
            projector["options"]["num_queries"] = model_args.num_queries
        if model_args.projector_output_norm is not None:
            projector["options"]["output_norm"] = _output_norm(model_args.projector_output_norm)
        model, processor = compose(llm=llm, encoders=encoders, projector=projector, dtype=dtype,
                                   attn_implementation=model_args.attn_implementation)
    return prepare_model(model, model_args), processor


def _output_norm(value: str) -> float | str:
    """`projector_output_norm` as the projector takes it: a number from its string form, else the word itself
    ("embedding"; any other word is refused by `Projector.set_output_norm`)."""
    try:
        return float(value)
    except ValueError:
        return value


def prepare_model(model, model_args: ModelArguments):
    """A loaded BioReason model made ready for a stage: the freeze policy of `model_args`, its feature cache (an
    existing cache of the same kind is kept, with what it holds) and, with `use_peft`, the stage's LoRA adapter on
    top. Returns the model to train (the PEFT wrapper with LoRA). A model that already carries an adapter is
    refused: merge it first (`merge_and_unload`), as the pipeline does between stages."""
    if hasattr(model, "get_base_model"):
        raise ValueError("prepare_model takes a BioReason model without an adapter; merge the previous stage's "
                         "(model.merge_and_unload()) first")
    apply_freeze_policy(model, model_args)
    enable_feature_cache(model, model_args)
    if not model_args.use_peft:
        return model
    from bioreason.training.adaptation import apply_lora

    return apply_lora(model, **lora_options(model_args))


def apply_freeze_policy(model, model_args: ModelArguments) -> None:
    """What trains, from `encoders_trainable` (true / false / unset), `projectors_trainable` and `llm_trainable`."""
    model.set_trainable(encoders=bool(model_args.encoders_trainable), projectors=model_args.projectors_trainable,
                        llm=model_args.llm_trainable)
    if model_args.encoders_trainable is False:
        for modality in model.config.modalities:
            model.set_encoder_trainable(modality, False)


def default_freeze_policy(model) -> None:
    """The freeze policy of a model about to be saved at the end of a pipeline: the default one (every encoder as
    its type says, projectors and LLM trainable), not the last stage's (GRPO freezes the projectors)."""
    apply_freeze_policy(model, ModelArguments())


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
        max_disk_bytes = int(model_args.feature_cache_max_gb * (1 << 30))
        cache = getattr(model.model, "feature_cache", None)
        if cache is not None and (cache.directory, cache.max_disk_bytes) == (directory, max_disk_bytes):
            return  # the same cache: keep what it holds in memory (a pipeline's next stage)
        model.enable_feature_cache(directory, max_disk_bytes=max_disk_bytes)
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
