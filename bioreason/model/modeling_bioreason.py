"""`BioReasonModel` / `BioReasonForCausalLM`: encoders -> projectors -> decoder LLM as a transformers model.

The LLM sits at `model.language_model` (a base model returning `last_hidden_state`) and `lm_head` on the top class,
as in transformers' Llava; TRL's GRPO log-prob pass relies on exactly that. Projected features replace the
placeholder embeddings through `masked_scatter`; the processor, not the model, expands each marker into placeholders,
and any disagreement between the two counts is an error naming both numbers.

Modality inputs travel as flat keyword arguments `{modality}_values` / `{modality}_mask` (what the processor returns),
so `Trainer`, `generate` and TRL can pass them through untouched.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from bioreason.encoders.base import build_encoder
from bioreason.model.configuration_bioreason import MODALITIES, BioReasonConfig
from bioreason.projectors.base import build_projector

MODALITY_KWARGS = tuple(f"{m}_{k}" for m in MODALITIES for k in ("values", "mask"))


def offline_kernel_default(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`from_pretrained` kwargs with `use_kernels=False` when the hub is offline and the caller did not choose.

    transformers 5.25 kernelizes every loaded model by default, and on CUDA that resolves `kernels-community/*` repos
    on the hub: offline, with no local copy, loading fails ("Version 2 of 'kernels-community/rotary' is not available
    in the local cache"; seen on an H200, docs/gpu/README.md). The kernels are an optimisation; the torch path computes
    the same function."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE and "use_kernels" not in kwargs:
        return {**kwargs, "use_kernels": False}
    return kwargs


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """requires_grad on floating-point parameters only: quantized (uint8) LLM weights can never require grad."""
    for param in module.parameters():
        if param.is_floating_point():
            param.requires_grad_(flag)


class BioReasonPreTrainedModel(PreTrainedModel):
    config_class = BioReasonConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _skip_keys_device_placement = "cache"
    _no_split_modules: list[str] = []

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """Loading replaces the parameters, so the saved freeze policy is applied again afterwards. Offline, hub
        kernels are off unless asked for (`offline_kernel_default`). Weights come from safetensors only: a folder
        with a pytorch_model.bin alone is refused, not unpickled."""
        model = super().from_pretrained(*args, **offline_kernel_default({"use_safetensors": True, **kwargs}))
        model.apply_freeze_policy()
        return model

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if hasattr(module, "queries") and isinstance(module.queries, nn.Parameter):  # the resampler's queries
            nn.init.normal_(module.queries, std=0.02)


class BioReasonModel(BioReasonPreTrainedModel):
    """Encoders + projectors + the LLM's base model; returns the LLM's `last_hidden_state`.

    `encoders` (`{modality: Encoder}`, optional) are modules already built with their weights, which `compose` passes
    so that a large encoder is built once instead of once to load and again from its spec."""

    def __init__(self, config: BioReasonConfig, encoders: dict[str, nn.Module] | None = None):
        super().__init__(config)
        self.feature_cache: Any = None  # a bioreason.model.feature_cache.FeatureCache for frozen encoders, when enabled
        self.language_model = AutoModel.from_config(config.text_config)
        hidden = config.text_config.hidden_size
        self.encoders = nn.ModuleDict()
        self.projectors = nn.ModuleDict()
        for modality, spec in config.modalities.items():
            encoder = (encoders or {}).get(modality)
            if encoder is None:
                encoder = build_encoder(spec["encoder"])
            else:  # its weights are loaded: post_init must not initialise them again
                for part in (*encoder.modules(), *encoder.parameters(), *encoder.buffers()):
                    part._is_hf_initialized = True
            self.encoders[modality] = encoder
            self.projectors[modality] = build_projector(spec["projector"], encoder.hidden_size, hidden)
        self.post_init()
        self.apply_freeze_policy()

    # Freezing -------------------------------------------------------------------------------------------------------
    def encoder_trainable(self, modality: str) -> bool:
        spec = self.config.modalities[modality]["encoder"]
        default = self.encoders[modality].trainable_by_default or self.config.encoders_trainable
        return bool(spec.get("trainable", default))

    def apply_freeze_policy(self) -> None:
        """requires_grad from the config's flags; frozen encoders also stay in eval mode (see `train`)."""
        for modality, encoder in self.encoders.items():
            set_requires_grad(encoder, self.encoder_trainable(modality))
        set_requires_grad(self.projectors, self.config.projectors_trainable)
        set_requires_grad(self.language_model, self.config.llm_trainable)
        self.train(self.training)

    def train(self, mode: bool = True) -> BioReasonModel:
        super().train(mode)
        for modality, encoder in self.encoders.items():  # a frozen encoder is a fixed function: no dropout
            if not self.encoder_trainable(modality):
                encoder.eval()
        return self

    # Embeddings -----------------------------------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def encode(self, modality: str, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One modality's encoder output `([B, L, D], [B, L])`: through the feature cache when the encoder is frozen
        and a cache is enabled, without autograd when frozen. The projector and the baselines' probe both read it."""
        encoder = self.encoders[modality]
        if values.is_floating_point():
            values = values.to(self.language_model.dtype)
        if self.encoder_trainable(modality):
            return encoder(values, mask)
        if self.feature_cache is not None and getattr(encoder, "cacheable", True):
            return self.feature_cache.encode(encoder, values, mask)
        with torch.no_grad():
            return encoder(values, mask)

    def get_modality_features(self, modality: str, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode and project one modality's items; returns the valid features flattened to `[sum N_i, H]` in item
        order, which is the order `masked_scatter` fills the placeholders."""
        projector = self.projectors[modality]
        embeddings, emb_mask = self.encode(modality, values, mask)
        projected = projector.rescale(projector(embeddings.to(self.language_model.dtype), emb_mask))
        return projected[projector.output_mask(emb_mask)]

    def get_placeholder_mask(self, modality: str, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        pad_id = self.config.modalities[modality]["pad_token_id"]
        mask = input_ids == pad_id
        n_tokens, n_features = int(mask.sum()), features.shape[0]
        if n_tokens != n_features:
            raise ValueError(
                f"{modality} features and placeholder tokens do not match: {n_tokens} <|{modality}_pad|> tokens in "
                f"input_ids, {n_features} projected features"
            )
        return mask.unsqueeze(-1)

    def embed_inputs(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None = None,
                     **modality_inputs: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with every modality's projected features written into its placeholder positions."""
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        for modality in self.config.modalities:
            values = modality_inputs.get(f"{modality}_values")
            if values is None:
                pad_id = self.config.modalities[modality]["pad_token_id"]
                if input_ids is not None and bool((input_ids == pad_id).any()):
                    raise ValueError(
                        f"input_ids hold <|{modality}_pad|> placeholders but no {modality} inputs were given"
                    )
                continue
            mask = modality_inputs.get(f"{modality}_mask")
            if mask is None:
                raise ValueError(f"{modality}_values was given without {modality}_mask")
            if input_ids is None:
                raise ValueError("modality inputs need input_ids to locate their placeholder tokens")
            features = self.get_modality_features(modality, values, mask.bool()).to(inputs_embeds.dtype)
            placeholders = self.get_placeholder_mask(modality, input_ids, features).to(inputs_embeds.device)
            inputs_embeds = inputs_embeds.masked_scatter(placeholders, features.to(inputs_embeds.device))
        for modality in set(MODALITIES) - set(self.config.modalities):
            if modality_inputs.get(f"{modality}_values") is not None:
                raise ValueError(f"this model has no {modality} encoder; it handles {sorted(self.config.modalities)}")
        return inputs_embeds

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        dna_values: torch.Tensor | None = None,
        dna_mask: torch.Tensor | None = None,
        rna_values: torch.Tensor | None = None,
        rna_mask: torch.Tensor | None = None,
        protein_values: torch.Tensor | None = None,
        protein_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        if input_ids is None and inputs_embeds is None:
            raise ValueError("You must specify input_ids or inputs_embeds")
        inputs_embeds = self.embed_inputs(
            input_ids, inputs_embeds,
            dna_values=dna_values, dna_mask=dna_mask, rna_values=rna_values, rna_mask=rna_mask,
            protein_values=protein_values, protein_mask=protein_mask,
        )
        return self.language_model(
            attention_mask=attention_mask, position_ids=position_ids, cache=cache, inputs_embeds=inputs_embeds,
            **kwargs,
        )


class BioReasonForCausalLM(BioReasonPreTrainedModel, GenerationMixin):
    """The full model: `BioReasonModel` plus the LLM's `lm_head`. Loads with `AutoModelForCausalLM` after
    `import bioreason`; `bioreason.compose` builds one from parts and `bioreason.hub.publish.push_model` publishes
    one with its processor (both sit above this file, which imports neither)."""

    def __init__(self, config: BioReasonConfig, encoders: dict[str, nn.Module] | None = None):
        super().__init__(config)
        self.model = BioReasonModel(config, encoders=encoders)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        embed = self.model.language_model.get_input_embeddings()
        embed_name = next(n for n, m in self.model.language_model.named_modules() if m is embed)
        self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{embed_name}.weight"}
        self.post_init()
        self.apply_freeze_policy()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def enable_feature_cache(self, directory: str | None = None, max_memory_bytes: int = 2 << 30,
                             max_disk_bytes: int = 20 << 30):
        """Compute each frozen encoder's output once per unique input (in memory; on disk too with `directory`, at
        most `max_disk_bytes` of it) and reuse it across epochs, GRPO samples and evaluations. Returns the cache (its
        `stats()` count hits)."""
        try:  # (a try block: the remote-code copy of this file must not require the bioreason package)
            from bioreason.model.feature_cache import FeatureCache
        except ImportError as err:
            raise ImportError("the feature cache needs the bioreason package") from err
        self.model.feature_cache = FeatureCache(directory, max_memory_bytes=max_memory_bytes,
                                                max_disk_bytes=max_disk_bytes)
        return self.model.feature_cache

    def disable_feature_cache(self) -> None:
        self.model.feature_cache = None

    def set_trainable(self, encoders: bool | None = None, projectors: bool | None = None,
                      llm: bool | None = None) -> None:
        """Change the freeze policy (saved in the config, so a reloaded model keeps it)."""
        for name, flag in (("encoders_trainable", encoders), ("projectors_trainable", projectors),
                           ("llm_trainable", llm)):
            if flag is not None:
                setattr(self.config, name, flag)
                for spec in self.config.modalities.values():
                    if name == "encoders_trainable":
                        spec["encoder"].pop("trainable", None)
        self.apply_freeze_policy()

    def set_encoder_trainable(self, modality: str, flag: bool | None) -> None:
        """One encoder's own setting, saved in the config: True / False override the model-wide flag and the
        encoder's default (False freezes a trainable-by-design encoder such as `expression`); None removes it."""
        spec = self.config.modalities[modality]["encoder"]
        if flag is None:
            spec.pop("trainable", None)
        else:
            spec["trainable"] = bool(flag)
        self.apply_freeze_policy()

    def apply_freeze_policy(self) -> None:
        self.model.apply_freeze_policy()
        set_requires_grad(self.lm_head, self.config.llm_trainable)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        dna_values: torch.Tensor | None = None,
        dna_mask: torch.Tensor | None = None,
        rna_values: torch.Tensor | None = None,
        rna_mask: torch.Tensor | None = None,
        protein_values: torch.Tensor | None = None,
        protein_mask: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, dna_values=dna_values, dna_mask=dna_mask, rna_values=rna_values,
            rna_mask=rna_mask, protein_values=protein_values, protein_mask=protein_mask, **kwargs,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                      **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache,
                                      hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def prepare_inputs_for_generation(self, *args: Any, is_first_iteration: bool | None = False, **kwargs: Any):
        """Modality inputs are consumed at prefill; with a cache, later steps must not see them again."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in MODALITY_KWARGS:
                model_inputs.pop(key, None)
        return model_inputs

    def generate(self, *args: Any, share_prompt_prefill: bool | None = None, **kwargs: Any):
        """`GenerationMixin.generate` with every placeholder token suppressed: the model must never emit them.

        `share_prompt_prefill` (an argument, or the same-named field of the `generation_config` passed in, which is how
        the GRPO trainer asks for it through TRL's generate call): rows that repeat a prompt, as a GRPO group does, are
        encoded and prefilled once (`bioreason.model.rollout`)."""
        config = kwargs.get("generation_config") or self.generation_config
        if share_prompt_prefill is None:
            share_prompt_prefill = bool(getattr(config, "share_prompt_prefill", False))
        already = kwargs.get("suppress_tokens", config.suppress_tokens) or []
        suppress = sorted(set(already) | set(self.config.placeholder_token_ids()))
        if kwargs.get("generation_config") is not None:  # fold into a copy: mixing both forms is deprecated
            config = copy.deepcopy(kwargs["generation_config"])
            config.suppress_tokens = suppress
            config.__dict__.pop("share_prompt_prefill", None)  # ours, not a transformers generation option
            kwargs["generation_config"] = config
            kwargs.pop("suppress_tokens", None)
        else:
            kwargs["suppress_tokens"] = suppress
        if share_prompt_prefill and not args and kwargs.get("input_ids") is not None:
            try:  # (a try block: the remote-code copy of this file must not require the bioreason package)
                from bioreason.model.rollout import generate_with_shared_prefill
            except ImportError as err:
                raise ImportError("share_prompt_prefill needs the bioreason package") from err
            modality = {k: kwargs.pop(k) for k in MODALITY_KWARGS if kwargs.get(k) is not None}
            return generate_with_shared_prefill(self, super().generate, kwargs.pop("input_ids"),
                                                kwargs.pop("attention_mask", None), modality, **kwargs)
        return super().generate(*args, **kwargs)


__all__ = ["BioReasonForCausalLM", "BioReasonModel", "BioReasonPreTrainedModel"]
