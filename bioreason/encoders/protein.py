"""Protein encoders: ESM2 (transformers `EsmModel`), AntiBERTy (weights shipped in the antiberty==0.1.3 wheel) and
ESM C (EvolutionaryScale `esm`, optional).

AntiBERTy is a BERT: we build `BertModel` ourselves (its own runner and tokenizer break under transformers 5) and read
the wheel's checkpoint, a pickle, only when its sha256 is the pinned one (`bioreason.encoders.weights`); any other
folder needs `model.safetensors`.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch
from transformers import BertConfig, BertModel, EsmConfig, EsmModel

from bioreason.encoders.base import Encoder, Featurizer, optional_import, read_vocab, register_encoder, require_strings
from bioreason.encoders.tokenized import HFTokenEncoder, pad_sequences


@register_encoder("esm2")
class ESM2Encoder(HFTokenEncoder):
    """facebook/esm2_t6_8M_UR50D ... esm2_t48_15B_UR50D, or a local directory with the same files."""

    model_class = EsmModel
    config_class = EsmConfig
    default_source = "facebook/esm2_t6_8M_UR50D"

    def featurizer_spec(self) -> dict:
        return {
            "type": self.type_name,
            "what": "protein",
            "vocab": self.options["vocab"],
            "prefix": ["<cls>"],
            "suffix": ["<eos>"],
            "pad_token": "<pad>",
            "max_length": self.model.config.max_position_embeddings - 2,
        }


def antiberty_default_dir() -> str:
    """The trained model folder inside the installed antiberty==0.1.3 wheel (found without importing the package)."""
    spec = importlib.util.find_spec("antiberty")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("AntiBERTy weights need the antiberty==0.1.3 wheel: pip install --no-deps antiberty==0.1.3")
    return os.path.join(spec.submodule_search_locations[0], "trained_models", "AntiBERTy_md_smooth")


# sha256 of trained_models/AntiBERTy_md_smooth/pytorch_model.bin in the antiberty==0.1.3 wheel (104,174,334 bytes).
ANTIBERTY_BIN_SHA256 = "f1ae33eac8cc8784a7d4be5a600141d2fa7bc7d8d5b3f5324d64a6a63bd0f137"


def load_antiberty_state(folder: str) -> dict[str, torch.Tensor]:
    """The BERT trunk's tensors from `model.safetensors`; a folder without one is read only if its .bin is the
    wheel's, pinned by hash (`bioreason.encoders.weights`): a user's pickle is refused, not unpickled."""
    from bioreason.encoders.weights import load_pinned_pickle, no_safetensors

    st = os.path.join(folder, "model.safetensors")
    if os.path.exists(st):
        from safetensors.torch import load_file

        state = load_file(st)
    elif os.path.exists(os.path.join(folder, "pytorch_model.bin")):
        state = load_pinned_pickle(os.path.join(folder, "pytorch_model.bin"), ANTIBERTY_BIN_SHA256)
    else:
        raise no_safetensors(folder)
    return {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.") or not k.startswith("cls.")}


@register_encoder("antiberty")
class AntiBERTyEncoder(HFTokenEncoder):
    """AntiBERTy (Ruffolo et al. 2021), 8-layer BERT over antibody residues; default source: the antiberty wheel."""

    model_class = BertModel
    config_class = BertConfig

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> AntiBERTyEncoder:
        folder = source or antiberty_default_dir()
        config = BertConfig.from_pretrained(folder)
        vocab_path = os.path.join(folder, "vocab.txt")
        if not os.path.exists(vocab_path):  # the wheel keeps vocab.txt one level up
            vocab_path = os.path.join(os.path.dirname(folder), "vocab.txt")
        options.setdefault("vocab", read_vocab(vocab_path))
        spec = {"type": cls.type_name, "source": source or "antiberty==0.1.3", "config": config.to_dict(),
                "options": options}
        encoder = cls(spec)
        state = load_antiberty_state(folder)
        state.pop("embeddings.position_ids", None)
        missing, _ = encoder.model.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"AntiBERTy weights in {folder} lack {len(missing)} tensors, e.g. {missing[:3]}")
        return encoder

    def featurizer_spec(self) -> dict:
        return {
            "type": self.type_name,
            "what": "protein",
            "vocab": self.options["vocab"],
            "prefix": ["[CLS]"],
            "suffix": ["[SEP]"],
            "pad_token": "[PAD]",
            "max_length": self.model.config.max_position_embeddings,
        }


ESMC_HINT = ("it conflicts with fair-esm: pip uninstall -y fair-esm && pip install --no-deps esm httpx "
             "(see README, 'Optional encoders')")


class ESMCFeaturizer(Featurizer):
    """ESM C's own sequence tokenizer (BOS + residues + EOS)."""

    def __call__(self, items):  # pragma: no cover - needs the optional `esm` package
        tok = optional_import("esm.tokenization", ESMC_HINT).get_esmc_model_tokenizers()
        rows = [tok.encode(s) for s in require_strings(items, "protein")]
        return pad_sequences(rows, tok.pad_token_id)


@register_encoder("esmc")
class ESMCEncoder(Encoder):
    """ESM C (EvolutionaryScale). Needs the optional `esm` package, which replaces fair-esm's `esm` import name and
    pins an old transformers: see the README's "Optional encoders" section for the install recipe. Not exercised in
    CI (the package cannot coexist with fair-esm); the import guard is."""

    featurizer_class = ESMCFeaturizer
    SIZES = {"esmc_300m": (960, 15, 30), "esmc_600m": (1152, 18, 36)}

    def __init__(self, spec: dict):
        super().__init__(spec)
        try:
            from esm.models.esmc import ESMC
            from esm.tokenization import get_esmc_model_tokenizers
        except ImportError as err:
            raise ImportError(f"The esmc encoder needs EvolutionaryScale's `esm` package: {ESMC_HINT}") from err
        name = spec.get("source") or "esmc_300m"  # pragma: no cover - below needs the optional package
        d_model, n_heads, n_layers = self.SIZES[name]
        self.model = ESMC(d_model, n_heads, n_layers, get_esmc_model_tokenizers(), use_flash_attn=False)
        self._hidden = d_model

    @property
    def hidden_size(self) -> int:  # pragma: no cover
        return self._hidden

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> ESMCEncoder:
        encoder = cls({"type": cls.type_name, "source": source or "esmc_300m", "options": options})
        esmc = optional_import("esm.models.esmc", ESMC_HINT).ESMC  # pragma: no cover
        encoder.model.load_state_dict(esmc.from_pretrained(encoder.spec["source"]).state_dict())  # pragma: no cover
        return encoder  # pragma: no cover

    def forward(self, values, mask):  # pragma: no cover - needs the optional `esm` package
        return self.model(sequence_tokens=values).embeddings, mask
