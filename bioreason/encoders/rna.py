"""Transcriptomic ("rna") encoders: a cell's expression profile, or an embedding of it computed elsewhere.

- `geneformer`: a BERT over rank-value-encoded genes (Theodoris et al. 2023): normalise counts by the cell's total and
  by each gene's median, rank the expressed genes, feed the top `max_length` gene tokens.
- `expression`: a trainable MLP over a fixed gene panel (no pretrained weights; trainable by design).
- `precomputed`: cell embeddings from TranscriptFormer, scGPT..., given directly or looked up by id in an AnnData
  `.obsm`, a safetensors file or an npz file (the seed study fed precomputed TranscriptFormer embeddings).

An item is one cell: a `{gene: value}` dict, a pandas Series indexed by gene, a one-row AnnData, or `(genes, values)`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import BertConfig, BertModel

from bioreason.data.expression import LOG_MAX, SCALED_FIX, SCALES, detect_scale, to_log_normalized
from bioreason.encoders.base import Encoder, Featurizer, optional_import, pad_sequences, register_encoder
from bioreason.encoders.plain_pickle import read_plain_pickle
from bioreason.encoders.tokenized import HFTokenEncoder


def as_profile(item: Any, index: int) -> tuple[list[str], np.ndarray]:
    """Normalise one cell to `(gene names, float values)` and reject NaN / inf."""
    if isinstance(item, dict):
        genes, values = list(item), list(item.values())
    elif isinstance(item, tuple) and len(item) == 2:
        genes, values = list(item[0]), item[1]
    elif hasattr(item, "index") and hasattr(item, "to_numpy"):  # pandas Series
        genes, values = [str(g) for g in item.index], item.to_numpy()
    elif hasattr(item, "var_names") and hasattr(item, "X"):  # AnnData
        if item.n_obs != 1:
            raise ValueError(f"rna input {index}: an AnnData item must hold one cell, got {item.n_obs}")
        x = item.X
        x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
        genes, values = [str(g) for g in item.var_names], x.reshape(-1)
    else:
        raise TypeError(
            f"rna input {index} must be a {{gene: value}} dict, a pandas Series, a one-row AnnData or (genes, values); "
            f"got {type(item).__name__}"
        )
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(genes) != len(values):
        raise ValueError(f"rna input {index}: {len(genes)} gene names but {len(values)} values")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"rna input {index}: expression values contain NaN or inf")
    return genes, values


def load_gene_dict(path: str) -> dict:
    """A gene -> value mapping from JSON, or from a Geneformer .pkl read opcode by opcode without unpickling it
    (`plain_pickle`: plain dicts, strings and numbers only), so a hostile pickle cannot run code."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    return read_plain_pickle(path)


def source_file(source: str, name: str) -> str:
    """`name` as given if it is a file, else the file `name` of `source`: joined to a local folder, downloaded (or
    read from the cache) for a hub id, never a hub id joined as a path."""
    if os.path.isfile(name):
        return name
    if os.path.isdir(source):
        return os.path.join(source, name)
    from transformers.utils import cached_file

    return cached_file(source, name)


class RankValueFeaturizer(Featurizer):
    """Geneformer's rank value encoding over the encoder's gene vocabulary."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self.vocab: list[str] = spec["vocab"]
        self.index = {g: i for i, g in enumerate(self.vocab)}
        self.medians: dict[str, float] = spec.get("medians") or {}
        if not self.medians and not spec.get("skip_medians"):
            raise ValueError("the geneformer featurizer has no gene medians: Geneformer divides each gene's normalised "
                             "count by its median before ranking; give medians (medians_file=) or skip_medians=true")
        self.max_length = int(spec.get("max_length", 2048))
        self.input_scale = spec.get("input_scale") or "counts"
        if self.input_scale not in ("counts", "fpkm_tpm", "log_normalized"):
            raise ValueError(f"the geneformer encoder ranks depth-normalised expression: input_scale must be counts, "
                             f"fpkm_tpm or log_normalized, got {self.input_scale!r}; {SCALED_FIX}")
        self.warned = False
        self.prefix = [self.index["<cls>"]] if spec.get("add_cls") else []
        self.suffix = [self.index["<eos>"]] if spec.get("add_eos") else []

    def encode(self, item: Any, i: int) -> list[int]:
        genes, values = as_profile(item, i)
        if np.any(values < 0):
            raise ValueError(f"rna input {i}: negative expression values (the geneformer encoder expects counts); "
                             f"{SCALED_FIX}")
        if self.input_scale == "log_normalized":  # back to depth-normalised counts: the ranking's own scale
            values = np.expm1(values)
        elif not self.warned and self.input_scale == "counts" and detect_scale(values) == "log_normalized":
            self.warned = True
            warnings.warn(f"rna input {i}: its values look log-normalised (not integers, at most {LOG_MAX:g}) but the "
                          "geneformer encoder takes them as counts; pass input_scale=log_normalized if they are",
                          stacklevel=2)
        known = [j for j, g in enumerate(genes) if g in self.index]
        if not known:
            raise ValueError(
                f"rna input {i}: none of its {len(genes)} genes (e.g. {genes[:3]}) are in the encoder's gene "
                f"vocabulary of {len(self.vocab)} (e.g. {self.vocab[-3:]}); symbols vs Ensembl ids?"
            )
        total = values.sum() or 1.0
        scored = [(values[j] / total * 1e4 / self.medians.get(genes[j], 1.0), genes[j]) for j in known if values[j] > 0]
        scored.sort(key=lambda t: (-t[0], t[1]))  # ties broken by gene id: deterministic
        budget = self.max_length - len(self.prefix) - len(self.suffix)
        return self.prefix + [self.index[g] for _, g in scored[:budget]] + self.suffix

    def __call__(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        rows = [self.encode(item, i) for i, item in enumerate(items)]
        for i, row in enumerate(rows):
            if len(row) == len(self.prefix) + len(self.suffix):
                raise ValueError(f"rna input {i}: no expressed gene of the encoder's vocabulary")
        return pad_sequences(rows, self.index["<pad>"])


@register_encoder("geneformer")
class GeneformerEncoder(HFTokenEncoder):
    """ctheodoris/Geneformer (a BertForMaskedLM checkpoint) or a local folder. Options: `vocab_file` (token
    dictionary, JSON or Geneformer's .pkl; default `token_dictionary.json`), `medians_file` (the gene median
    dictionary: required, as Geneformer's encoding divides by it, unless `skip_medians: true`, which the saved config
    records), `max_length`, `add_cls` / `add_eos` (Geneformer V2), `input_scale` (counts, the default, or fpkm_tpm:
    ranked as given, as the encoding normalises each cell's total; log_normalized: expm1 first). File names are
    paths, or files of the source (a local folder or a hub repository)."""

    model_class = BertModel
    config_class = BertConfig
    featurizer_class = RankValueFeaturizer

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> GeneformerEncoder:
        if source is None:
            raise ValueError("the geneformer encoder needs a source: a hub id or a local Geneformer folder")
        model = BertModel.from_pretrained(source, add_pooling_layer=False, use_safetensors=True)  # never a .bin pickle
        if "vocab" not in options:
            token_dict = load_gene_dict(source_file(source, options.pop("vocab_file", None) or "token_dictionary.json"))
            options["vocab"] = [g for g, _ in sorted(token_dict.items(), key=lambda kv: kv[1])]
        if "medians" not in options and options.get("medians_file"):
            options["medians"] = load_gene_dict(source_file(source, options.pop("medians_file")))
        if not options.get("medians") and not options.get("skip_medians"):
            raise ValueError(f"{source}: the geneformer encoder needs Geneformer's gene median dictionary "
                             "(medians_file=PATH or a file of the source, .pkl or .json); skip_medians=true ranks "
                             "counts without it, which is not Geneformer's encoding, and is recorded in the config")
        return cls.wrap(model, source, options)

    def featurizer_spec(self) -> dict:
        return {
            "type": self.type_name,
            "vocab": self.options["vocab"],
            "medians": self.options.get("medians"),
            "skip_medians": bool(self.options.get("skip_medians", False)),
            "max_length": min(self.options.get("max_length", 2048), self.model.config.max_position_embeddings),
            "add_cls": self.options.get("add_cls", False),
            "add_eos": self.options.get("add_eos", False),
            "input_scale": self.options.get("input_scale", "counts"),
        }


class PanelFeaturizer(Featurizer):
    """Align a cell to the encoder's gene panel (missing genes are 0 and masked). With `transform_scale` the cell is
    first brought to the log-normalised scale from the scale it was given on (counts: depth-normalised over all of its
    genes, then log1p; FPKM / TPM: log1p), as the standard analysis does; without it, values are taken as given
    (optionally log1p, the option older models saved)."""

    def __call__(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        panel: list[str] = self.spec["genes"]
        scale = self.spec.get("transform_scale")
        where = {g: j for j, g in enumerate(panel)}
        values = torch.zeros(len(items), len(panel))
        mask = torch.zeros(len(items), len(panel), dtype=torch.bool)
        for i, item in enumerate(items):
            genes, vals = as_profile(item, i)
            if scale:
                if scale in ("counts", "fpkm_tpm") and (vals < 0).any():
                    raise ValueError(f"rna input {i}: negative expression values, but this encoder takes {scale} "
                                     f"values; {SCALED_FIX}")
                vals = to_log_normalized(vals, scale)
            hits = [(where[g], v) for g, v in zip(genes, vals, strict=True) if g in where]
            if not hits:
                raise ValueError(f"rna input {i}: none of its {len(genes)} genes are in the {len(panel)}-gene panel")
            cols = torch.tensor([c for c, _ in hits])
            vals_t = torch.tensor([v for _, v in hits], dtype=torch.float32)
            values[i, cols] = torch.log1p(vals_t.clamp(min=0)) if self.spec.get("log1p") else vals_t
            mask[i, cols] = True
        return {"values": values, "mask": mask}

    def output_lengths(self, mask: torch.Tensor) -> list[int]:
        return [int(self.spec["num_tokens"])] * mask.shape[0]


@register_encoder("expression")
class ExpressionEncoder(Encoder):
    """MLP over a gene panel -> `num_tokens` vectors. Options: `genes` (required), `hidden_size` (256),
    `num_tokens` (1), `input_scale` (the scale cells come on: counts, fpkm_tpm, log_normalized or scaled; detected
    from the source .h5ad when not given, and each cell is brought to the log-normalised scale accordingly; without
    a scale, values are taken as given), `log1p` (only without `input_scale`: what models saved before it used)."""

    featurizer_class = PanelFeaturizer
    trainable_by_default = True

    def __init__(self, spec: dict):
        super().__init__(spec)
        genes = self.options.get("genes")
        if not genes:
            raise ValueError("the expression encoder needs options['genes'], the gene panel")
        hidden, tokens = self.options.setdefault("hidden_size", 256), self.options.setdefault("num_tokens", 1)
        scale = self.options.get("input_scale")
        if scale is not None and scale not in SCALES:
            raise ValueError(f"the expression encoder's input_scale must be one of {SCALES}, got {scale!r}")
        if scale is not None and self.options.get("log1p"):
            raise ValueError("the expression encoder: give input_scale (it decides the transform) or log1p, not both")
        self.mlp = nn.Sequential(nn.Linear(len(genes), hidden), nn.GELU(), nn.Linear(hidden, hidden * tokens))

    @property
    def hidden_size(self) -> int:
        return self.options["hidden_size"]

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> ExpressionEncoder:
        if source and "genes" not in options:  # a gene list file, one gene a line, or an .h5ad whose var_names to use
            if source.endswith(".h5ad"):
                anndata = optional_import("anndata", "pip install anndata")
                cells = anndata.read_h5ad(source, backed="r")
                options["genes"] = [str(g) for g in cells.var_names]
                if "input_scale" not in options and not options.get("log1p"):
                    options["input_scale"] = detect_scale(cells.X[: min(cells.n_obs, 2000)])
            else:
                with open(source, encoding="utf-8") as fh:
                    options["genes"] = [ln.strip() for ln in fh if ln.strip()]
        return cls({"type": cls.type_name, "source": source, "options": options})

    def featurizer_spec(self) -> dict:
        return {"type": self.type_name, "genes": self.options["genes"], "num_tokens": self.options["num_tokens"],
                "log1p": self.options.get("log1p", False), "transform_scale": self.options.get("input_scale")}

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(values.to(self.mlp[0].weight.dtype)).view(values.shape[0], self.options["num_tokens"], -1)
        return out, torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)


def load_embedding_store(path: str, obsm_key: str | None = None) -> dict[str, np.ndarray]:
    """id -> embedding from .safetensors (one tensor per id), .npz (`ids` + `embeddings`, or one array per id; loaded
    with allow_pickle=False) or .h5ad (`obsm[obsm_key]`, ids = obs_names)."""
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return dict(load_file(path))
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            if "ids" in npz and "embeddings" in npz:
                return {str(i): e for i, e in zip(npz["ids"], npz["embeddings"], strict=True)}
            return {k: npz[k] for k in npz.files}
    if path.endswith(".h5ad"):
        adata = optional_import("anndata", "pip install anndata").read_h5ad(path)
        if obsm_key is None or obsm_key not in adata.obsm:
            raise ValueError(f"{path}: obsm key {obsm_key!r} not found; available: {sorted(adata.obsm.keys())}")
        return {str(i): np.asarray(e) for i, e in zip(adata.obs_names, adata.obsm[obsm_key], strict=True)}
    raise ValueError(f"{path}: embedding stores must be .safetensors, .npz or .h5ad")


class EmbeddingFeaturizer(Featurizer):
    """Items are embeddings ([D] or [T, D]) or ids looked up in the store named by `source`."""

    def __init__(self, spec: dict):
        super().__init__(spec)
        self._store: dict[str, np.ndarray] | None = None

    def lookup(self, key: str, i: int) -> np.ndarray:
        if self._store is None:
            if not self.spec.get("source"):
                raise ValueError(f"rna input {i} is an id ({key!r}) but the precomputed encoder has no store")
            self._store = load_embedding_store(self.spec["source"], self.spec.get("obsm_key"))
        if key not in self._store:
            raise KeyError(f"rna input {i}: id {key!r} not found in {self.spec['source']}")
        return self._store[key]

    def __call__(self, items):
        dim, tokens = self.spec["dim"], self.spec["num_tokens"]
        values = torch.zeros(len(items), tokens, dim)
        for i, item in enumerate(items):
            arr = self.lookup(item, i) if isinstance(item, str) else np.asarray(item, dtype=np.float32)
            arr = np.asarray(arr, dtype=np.float32).reshape(-1, dim) if arr.size % dim == 0 else None
            if arr is None or arr.shape[0] != tokens:
                raise ValueError(f"rna input {i}: expected an embedding of {tokens} x {dim} values")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"rna input {i}: embedding contains NaN or inf")
            values[i] = torch.from_numpy(arr)
        return {"values": values, "mask": torch.ones(len(items), tokens, dtype=torch.bool)}


@register_encoder("precomputed")
class PrecomputedEncoder(Encoder):
    """Identity over embeddings computed elsewhere. Options: `dim` (required), `num_tokens` (1), `obsm_key`."""

    featurizer_class = EmbeddingFeaturizer
    cacheable = False  # the identity: nothing to save by caching

    def __init__(self, spec: dict):
        super().__init__(spec)
        if "dim" not in self.options:
            raise ValueError("the precomputed encoder needs options['dim'], the embedding width")
        self.options.setdefault("num_tokens", 1)

    @property
    def hidden_size(self) -> int:
        return int(self.options["dim"])

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> PrecomputedEncoder:
        if source and "dim" not in options:
            first = next(iter(load_embedding_store(source, options.get("obsm_key")).values()))
            options["dim"] = int(np.asarray(first).shape[-1])
        return cls({"type": cls.type_name, "source": source, "options": options})

    def featurizer_spec(self) -> dict:
        return {"type": self.type_name, "source": self.spec.get("source"), "obsm_key": self.options.get("obsm_key"),
                "dim": self.options["dim"], "num_tokens": self.options["num_tokens"]}

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return values, mask
