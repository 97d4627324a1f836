"""Tiny models built in code: real classes (Llama, Qwen3, EsmModel, BertModel, Enformer) with hidden sizes of 16-64,
so every encoder x projector combination runs in seconds on CPU. Real weights (SmolLM2, AntiBERTy) are in the
`slow` tests."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    EsmConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

import bioreason  # noqa: F401  (registers the Auto classes)
from bioreason.encoders import build_encoder
from bioreason.encoders.dna import nucleotide_transformer_vocab

ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q",
             "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>"]
ANTIBERTY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"ACDEFGHIKLMNPQRSTVWY"]
GENES = [f"ENSG{i:011d}" for i in range(40)]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

ENCODER_TYPES = ["esm2", "antiberty", "nucleotide_transformer", "enformer", "geneformer", "expression", "precomputed",
                 "kmer"]
MODALITY_OF = {"esm2": "protein", "antiberty": "protein", "nucleotide_transformer": "dna", "enformer": "dna",
               "geneformer": "rna", "expression": "rna", "precomputed": "rna", "kmer": "dna"}


@pytest.fixture(autouse=True)
def _seed(tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("BIOREASON_CACHE", os.environ.get("BIOREASON_TEST_CACHE", str(tmp_path / "cache")))


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few lines: real tokenizers machinery, 300 tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["What is this protein? It binds DNA.", "The cell type is a T cell.", "<think>reason</think><answer>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus * 10, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llm(family: str = "llama", vocab_size: int = 300, tie: bool = False, hidden: int = 32):
    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=tie,
                  pad_token_id=0, eos_token_id=2, bos_token_id=None)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if family == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(head_dim=8, **common))
    raise ValueError(family)


def tiny_encoder(kind: str):
    """A randomly initialised encoder of the real class, built from a spec exactly as from_pretrained would."""
    esm = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               position_embedding_type="rotary", pad_token_id=1, mask_token_id=32, token_dropout=False)
    bert = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=128, pad_token_id=0)
    if kind == "esm2":
        spec = {"config": EsmConfig(vocab_size=33, max_position_embeddings=256, **esm).to_dict(),
                "options": {"vocab": ESM_VOCAB}}
    elif kind == "nucleotide_transformer":
        vocab = nucleotide_transformer_vocab()
        spec = {"config": EsmConfig(vocab_size=len(vocab), max_position_embeddings=256,
                                    **{**esm, "pad_token_id": 1, "mask_token_id": 2}).to_dict(),
                "options": {"vocab": vocab}}
    elif kind == "antiberty":
        spec = {"config": BertConfig(vocab_size=25, **bert).to_dict(), "options": {"vocab": ANTIBERTY_VOCAB}}
    elif kind == "geneformer":
        vocab = ["<pad>", "<mask>", "<cls>", "<eos>", *GENES]
        spec = {"config": BertConfig(vocab_size=len(vocab), **bert).to_dict(),
                "options": {"vocab": vocab, "add_cls": True, "max_length": 32,
                            "medians": {g: 1.0 + (i % 5) / 10 for i, g in enumerate(GENES)}}}
    elif kind == "enformer":
        spec = {"config": dict(dim=48, depth=1, heads=2, output_heads=dict(human=4), target_length=-1,
                               dim_divisible_by=16, attn_dim_key=8, num_downsamples=7), "options": {}}
    elif kind == "expression":
        spec = {"options": {"genes": GENES[:30], "hidden_size": 24, "num_tokens": 2}}
    elif kind == "precomputed":
        spec = {"options": {"dim": 12, "num_tokens": 1}}
    elif kind == "kmer":
        spec = {"options": {"k": 2}}
    else:
        raise ValueError(kind)
    return build_encoder({"type": kind, "source": None, **spec})


def sample_items(kind: str, n: int = 2, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    modality = MODALITY_OF[kind]
    if modality == "protein":
        return ["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=int(rng.integers(8, 20)))) for _ in range(n)]
    if modality == "dna":
        length = 300 if kind == "enformer" else 40
        return ["".join(rng.choice(list("ACGT"), size=length - 37 * i)) for i in range(n)]
    if kind == "precomputed":
        return [rng.normal(size=12).astype(np.float32) for _ in range(n)]
    return [{g: float(rng.poisson(3)) for g in GENES[5 * i: 5 * i + 25]} for i in range(n)]


def tiny_model(kinds: list[str] | str, projector="resampler", family: str = "llama", **kwargs):
    from bioreason.model.composition import compose

    kinds = [kinds] if isinstance(kinds, str) else kinds
    tok = tiny_tokenizer()
    llm = tiny_llm(family, vocab_size=len(tok), tie=kwargs.pop("tie", False), hidden=kwargs.pop("hidden", 32))
    if projector == "resampler":
        projector = {"type": "resampler", "options": {"num_queries": 4, "width": 32, "heads": 4}}
    return compose(llm, {MODALITY_OF[k]: tiny_encoder(k) for k in kinds}, projector=projector, tokenizer=tok, **kwargs)


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


def code_block(text: str, marker: str) -> str:
    """The ```python block that follows `<!-- marker -->` in a Markdown text (README, model card): the snippet a user
    copies, run as written."""
    after = text.split(f"<!-- {marker} -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


BLOCK_BIOREASON = r'''
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"bioreason", "encoders", "projectors", "recipes"}:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, _Block())
'''
"""Prepended to a snippet run in a subprocess: bioreason (and the repo's top-level folders) cannot be imported, as on
a machine that has only transformers and the exported folder."""


def no_unpickling(monkeypatch):
    """torch.load replaced by a failure: a test that reaches it has unpickled a user's file."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"torch.load was called on {args[:1]}")

    monkeypatch.setattr(torch, "load", refuse)
