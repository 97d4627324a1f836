"""`BioReasonConfig`: the decoder LLM's config plus one spec per biological modality.

Why a spec dict per modality rather than nested `PreTrainedConfig`s: encoders come from several libraries (transformers
ESM/BERT, enformer-pytorch, evo2, ESM C) whose configs are not all transformers configs. A plain JSON dict with
`type` + `source` + `config` (the architecture, filled in by `compose`) + `options` is enough for
`from_pretrained` to rebuild every encoder with no network access; the weights then come from our safetensors.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from bioreason.data.modalities import MODALITIES


def placeholder_tokens(modality: str) -> dict[str, str]:
    """The user-facing marker and the three special tokens a marker expands into."""
    return {
        "marker": f"<{modality}>",
        "start_token": f"<|{modality}_start|>",
        "pad_token": f"<|{modality}_pad|>",
        "end_token": f"<|{modality}_end|>",
    }


@strict
class BioReasonConfig(PreTrainedConfig):
    """Config of a BioReason model.

    Args:
        text_config: config of the decoder LLM (any `AutoModel`-loadable causal LM: Llama, Qwen3, SmolLM2...).
        modalities: `{modality: {"encoder": spec, "projector": spec, "start_token_id", "pad_token_id",
            "end_token_id"}}` for each of `dna`, `rna`, `protein` the model understands.
        encoders_trainable / projectors_trainable / llm_trainable: the default freeze policy (torchtune-style flags).
            An encoder spec may override with its own `trainable` key (the `expression` MLP is trainable by design).
        llm_source: where the LLM came from, recorded at composition: `{"base_model": hub id or None, "path": what
            was given, "gguf_file": the GGUF file it was dequantised from, or None}`. Cards and `bioreason push` read
            the base model and its license from here (None: unknown, and they ask instead of guessing).
    """

    model_type = "bioreason"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    text_config: dict | PreTrainedConfig | None = None
    modalities: dict | None = None
    encoders_trainable: bool = False
    projectors_trainable: bool = True
    llm_trainable: bool = True
    tie_word_embeddings: bool = False
    llm_source: dict | None = None

    def __post_init__(self, **kwargs):
        if self.modalities is None:
            self.modalities = {}
        for name in self.modalities:
            if name not in MODALITIES:
                raise ValueError(f"Unknown modality {name!r}; available: {sorted(MODALITIES)}")
        super().__post_init__(**kwargs)
        # As in Llava: tied LLMs (SmolLM2) record tie_word_embeddings in the text config.
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True

    def placeholder_token_ids(self) -> list[int]:
        """Every start / pad / end id: these must never be generated."""
        ids = []
        for spec in self.modalities.values():
            ids += [spec["start_token_id"], spec["pad_token_id"], spec["end_token_id"]]
        return ids


__all__ = ["BioReasonConfig", "MODALITIES", "placeholder_tokens"]
