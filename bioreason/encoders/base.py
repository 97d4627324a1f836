"""The encoder interface and its registry.

An encoder turns raw biological items (a DNA string, a protein string, a cell's expression profile) into embeddings
`[B, L, D]` plus a mask `[B, L]`. It is split in two so the processor can run without weights:

- a `Featurizer` (in the processor): raw items -> `{"values": tensor, "mask": bool tensor}` and the number of
  positions the encoder will emit per item (the processor needs it to size the placeholder run);
- an `Encoder` (in the model): `forward(values, mask) -> (embeddings, mask)`.

Both are rebuilt from JSON specs saved in the model / processor config, so `from_pretrained` needs no network.
`forward` is a pure function of `(values, mask)` so a feature cache can sit in front of frozen encoders.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

ENCODERS: dict[str, type[Encoder]] = {}


def register_encoder(name: str) -> Callable[[type[Encoder]], type[Encoder]]:
    """Class decorator: make an encoder type available to `build_encoder` / `load_encoder` by name."""

    def wrap(cls: type[Encoder]) -> type[Encoder]:
        cls.type_name = name
        ENCODERS[name] = cls
        return cls

    return wrap


def get_encoder_class(name: str) -> type[Encoder]:
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}; available: {sorted(ENCODERS)}")
    return ENCODERS[name]


def optional_import(module: str, hint: str):
    """Import a package only some encoders need, with an install hint when it is missing. (A call, not an import
    statement: the model folder's remote code then does not list every encoder's package as a requirement.)"""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is needed here: {hint}") from err


def build_encoder(spec: dict) -> Encoder:
    """Rebuild an encoder's architecture from its saved spec (random weights; `from_pretrained` fills them)."""
    return get_encoder_class(spec["type"])(copy.deepcopy(spec))


INITIALISABLE = ("nucleotide_transformer",)  # `bioreason encoder init TYPE OUT` builds a random folder of these


def load_encoder(name: str, source: str | None = None, **options: Any) -> Encoder:
    """Load a pretrained encoder from a hub id or a local directory (or build a fresh one where that is meaningful).
    A hub id that cannot be fetched (offline, no network) is an error naming the model and the offline ways out;
    transformers' own message names neither the encoder nor the model id."""
    cls = get_encoder_class(name)
    try:
        return cls.from_source(source, **options)
    except OSError as err:
        wanted = source or getattr(cls, "default_source", None)
        if not wanted or os.path.isdir(wanted):  # a local folder's problem: its own message says it
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        offline = (f"download it where the hub is reachable (`hf download {wanted} --local-dir DIR`) and pass "
                   f"{name}:DIR")
        if name in INITIALISABLE:
            offline += f", or build a random one of the real architecture with `bioreason encoder init {name} DIR`"
        raise OSError(f"encoder {name}: could not load {wanted!r} ({first}); {offline}") from err


def build_featurizer(spec: dict) -> Featurizer:
    return get_encoder_class(spec["type"]).featurizer_class(copy.deepcopy(spec))


class Featurizer:
    """Raw items -> padded tensors. Holds only JSON-serialisable state (vocabularies, gene panels)."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.options: dict = spec.get("options", {})

    def __call__(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def output_lengths(self, mask: torch.Tensor) -> list[int]:
        """Positions the encoder emits per item; per-token encoders emit one per input token."""
        return mask.sum(-1).tolist()


class Encoder(nn.Module):
    """Base class. Subclasses set `featurizer_class` and implement `__init__(spec)`, `from_source`, `forward`."""

    type_name: ClassVar[str] = ""
    featurizer_class: ClassVar[type[Featurizer]] = Featurizer
    trainable_by_default: ClassVar[bool] = False
    # the feature cache (bioreason.model.feature_cache) may store this encoder's outputs while it is frozen
    cacheable: ClassVar[bool] = True
    # an item's output depends only on its valid (mask) prefix, not on how wide the batch is padded: the cache may then
    # key and store items trimmed to that prefix, so a sequence hits in any batch
    honours_padding_mask: ClassVar[bool] = False

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        self.options: dict = spec.setdefault("options", {})

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> Encoder:
        raise NotImplementedError

    def featurizer_spec(self) -> dict:
        """What the processor's featurizer needs; the default is the spec without the architecture."""
        return {"type": self.type_name, "options": copy.deepcopy(self.options)}

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def pad_sequences(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad integer rows into `values` [B, L] and a boolean `mask` [B, L]."""
    width = max((len(r) for r in rows), default=0)
    values = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        values[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return {"values": values, "mask": mask}


def require_strings(items: Sequence[Any], what: str) -> list[str]:
    """Sequence encoders take strings; anything else is a caller error worth a precise message."""
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{what} input {i} must be a sequence string, got {type(item).__name__}")
        if not item:
            raise ValueError(f"{what} input {i} is an empty sequence")
        out.append(item.upper())
    return out


def read_vocab(path: str) -> list[str]:
    """A `vocab.txt` (one token a line, id = line number), as ESM, Nucleotide Transformer and BERT ship it."""
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh if line.rstrip("\n")]
