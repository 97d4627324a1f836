"""Shared machinery for encoders that are transformers models over a token vocabulary (ESM2, Nucleotide Transformer,
AntiBERTy, Geneformer): a vocabulary-driven featurizer and a wrapper that rebuilds the model class from its config dict.

Why our own featurizer instead of the upstream tokenizer object: the processor must save and reload it offline as plain
JSON, and AntiBERTy's tokenizer maps every residue to [UNK] under transformers 5 (shared/STACK_NOTES.md). The tests
check our ids against the reference tokenizers where one is available (fair-esm's alphabet).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import cached_file

from bioreason.encoders.base import Encoder, Featurizer, pad_sequences, read_vocab, require_strings


class TokenFeaturizer(Featurizer):
    """Sequence string -> ids: optional prefix/suffix specials, then k-mers (k=1: one token per residue).

    A k-mer that is not in the vocabulary (a trailing remainder, or one containing N) falls back to single characters.
    With `kmer_restart` (Nucleotide Transformer: "N") the sequence is first split at that character, which becomes its
    own token, and the k-mer frame starts again after it, as NT's tokenizer does (`ACGTNACGTACGTA` -> A C G T N ACGTAC
    G T A, not A C G T N A CGTACG T A). A character not in the vocabulary is an error, never a silent [UNK].
    """

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.vocab: list[str] = spec["vocab"]
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        self.prefix = [self.index[t] for t in spec.get("prefix", [])]
        self.suffix = [self.index[t] for t in spec.get("suffix", [])]
        self.pad_id = self.index[spec["pad_token"]]
        self.kmer = int(spec.get("kmer", 1))
        self.restart = spec.get("kmer_restart")
        self.max_length = spec.get("max_length")
        self.what = spec.get("what", spec["type"])

    def tokenize(self, seq: str, item: int) -> list[int]:
        ids: list[int] = []
        offset = 0
        parts = seq.split(self.restart) if self.restart and self.kmer > 1 else [seq]
        for n, part in enumerate(parts):
            if n:  # the restart character between two parts
                ids.append(self._char_id(self.restart, item, offset - 1))
            ids += self._kmers(part, item, offset)
            offset += len(part) + 1
        ids = self.prefix + ids + self.suffix
        if self.max_length is not None and len(ids) > self.max_length:
            raise ValueError(
                f"{self.what} input {item} is {len(ids)} tokens long; the encoder accepts at most {self.max_length}"
            )
        return ids

    def _kmers(self, seq: str, item: int, offset: int) -> list[int]:
        ids: list[int] = []
        k = self.kmer
        for start in range(0, len(seq), k):
            chunk = seq[start : start + k]
            if len(chunk) == k and chunk in self.index:
                ids.append(self.index[chunk])
            else:
                ids += [self._char_id(ch, item, offset + start + pos) for pos, ch in enumerate(chunk)]
        return ids

    def _char_id(self, ch: str, item: int, position: int) -> int:
        if ch not in self.index:
            raise ValueError(f"{self.what} input {item}: character {ch!r} at position {position} is not in the "
                             f"encoder's vocabulary")
        return self.index[ch]

    def __call__(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        seqs = require_strings(items, self.what)
        return pad_sequences([self.tokenize(s, i) for i, s in enumerate(seqs)], self.pad_id)


class HFTokenEncoder(Encoder):
    """A transformers encoder model (`model_class`) rebuilt from `spec["config"]`; returns `last_hidden_state`."""

    model_class: ClassVar[type[PreTrainedModel]]
    config_class: ClassVar[type[PretrainedConfig]]
    featurizer_class = TokenFeaturizer
    honours_padding_mask = True  # attention_mask hides the padding from every position

    default_source: ClassVar[str | None] = None  # the checkpoint `from_source` loads when given none

    def __init__(self, spec: dict, model: PreTrainedModel | None = None):
        super().__init__(spec)
        if model is None:  # a saved model: the architecture from the spec, the weights from its safetensors
            model = self.model_class(self.config_class.from_dict(spec["config"]), add_pooling_layer=False)
        self.model = model

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> HFTokenEncoder:
        """A transformers checkpoint (hub id or folder) and the `vocab.txt` beside it."""
        source = source or cls.default_source
        model = cls.model_class.from_pretrained(source, add_pooling_layer=False, dtype=torch.float32,
                                               use_safetensors=True)  # a .bin is a pickle: never read
        options.setdefault("vocab", read_vocab(cached_file(source, "vocab.txt")))
        return cls.wrap(model, source, options)

    @classmethod
    def wrap(cls, model: PreTrainedModel, source: str | None, options: dict) -> HFTokenEncoder:
        """The encoder around a loaded model: the spec records its config; the model itself is kept (built once)."""
        spec = {"type": cls.type_name, "source": source, "config": model.config.to_dict(), "options": options}
        return cls(spec, model=model)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=values, attention_mask=mask.long())
        return out.last_hidden_state, mask
