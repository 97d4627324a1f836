"""DNA encoders: Nucleotide Transformer (transformers ESM classes over non-overlapping 6-mers), Enformer
(enformer-pytorch, 128 bp per output bin) and Evo 2 (optional `evo2` package, CUDA only).

Enformer under transformers 5: its `_trunk` Sequential aliases the stem / conv tower / transformer modules, so
save_pretrained refuses the shared tensors and from_pretrained looks for `all_tied_weights_keys`. We keep `_trunk` as a
plain attribute outside the module tree and drop the unused output heads, so only one copy of each tensor is saved.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any

import torch
from transformers import EsmConfig, EsmModel
from transformers.utils import cached_file

from bioreason.encoders.base import (
    Encoder,
    Featurizer,
    optional_import,
    pad_sequences,
    register_encoder,
    require_strings,
)
from bioreason.encoders.tokenized import HFTokenEncoder

DNA_INDEX = {"A": 0, "C": 1, "G": 2, "T": 3, "N": 4}

def nucleotide_transformer_vocab(k: int = 6) -> list[str]:
    """The Nucleotide Transformer vocabulary layout (specials, all k-mers, single nucleotides); used for tiny models.
    Real checkpoints always use their own vocab.txt."""
    kmers = ["".join(p) for p in itertools.product("ATCG", repeat=k)]
    return ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>", *kmers, "A", "T", "C", "G", "N"]

@register_encoder("nucleotide_transformer")
class NucleotideTransformerEncoder(HFTokenEncoder):
    """InstaDeepAI/nucleotide-transformer-500m-human-ref and the other checkpoints that load into transformers'
    native `EsmModel` (the v2 checkpoints need their remote code and are not supported)."""

    model_class = EsmModel
    config_class = EsmConfig
    default_source = "InstaDeepAI/nucleotide-transformer-500m-human-ref"

    def featurizer_spec(self) -> dict:
        return {
            "type": self.type_name,
            "what": "dna",
            "vocab": self.options["vocab"],
            "prefix": ["<cls>"],
            "suffix": [],
            "pad_token": "<pad>",
            "kmer": self.options.get("kmer", 6),
            "kmer_restart": "N",  # NT's tokenizer splits at N and starts the 6-mer frame again after it
            "max_length": self.model.config.max_position_embeddings - 2,
        }


def init_nucleotide_transformer(out: str, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                                max_length: int = 1000, seed: int = 0) -> str:
    """Write a randomly initialised Nucleotide Transformer (transformers' `EsmModel`, the NT vocabulary of k-mers) to
    `out`, loadable as `nucleotide_transformer:OUT`. For machines without the hub, and for tasks where a small
    encoder trained from scratch is the point; its README.md says the weights are not pretrained."""
    kmer = 6  # the featurizer's default; every Nucleotide Transformer checkpoint tokenizes 6-mers
    vocab = nucleotide_transformer_vocab(kmer)
    config = EsmConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                       num_attention_heads=num_heads, intermediate_size=4 * hidden_size, pad_token_id=1,
                       mask_token_id=2, position_embedding_type="absolute",
                       max_position_embeddings=1 + max_length // kmer + max_length % kmer + 2)  # <cls>; ESM: +2
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = EsmModel(config, add_pooling_layer=False)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(vocab) + "\n")
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(f"# Nucleotide Transformer architecture, randomly initialised (seed {seed}); not pretrained\n\n"
                 f"hidden {hidden_size}, {num_layers} layers, {num_heads} heads, {kmer}-mer tokens, up to "
                 f"{max_length} bp. Written by `bioreason encoder init nucleotide_transformer`.\n")
    return out


ENFORMER_HINT = "pip install enformer-pytorch==0.8.11 (0.8.12 pins transformers 4)"


def _enformer():
    return optional_import("enformer_pytorch", ENFORMER_HINT)


def _enformer_config():
    return optional_import("enformer_pytorch.config_enformer", ENFORMER_HINT).EnformerConfig


# Hub repos whose main branch holds only pytorch_model.bin, and the revision holding the same weights as safetensors
# (the Hub's safetensors conversion pull request).
SAFETENSORS_REVISIONS = {"EleutherAI/enformer-official-rough": "refs/pr/1"}


def load_weights(source: str) -> dict[str, torch.Tensor]:
    """The source's `model.safetensors` (a local folder or a hub id; for a hub repo that has it only in its conversion
    pull request, from that revision). A source with only pytorch_model.bin is refused, not unpickled."""
    from safetensors.torch import load_file

    from bioreason.encoders.weights import no_safetensors

    path = cached_file(source, "model.safetensors", _raise_exceptions_for_missing_entries=False)
    if not path and source in SAFETENSORS_REVISIONS:
        path = cached_file(source, "model.safetensors", revision=SAFETENSORS_REVISIONS[source],
                           _raise_exceptions_for_missing_entries=False)
    if not path:
        raise no_safetensors(source)
    return load_file(path)

def load_every_weight(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """`load_state_dict` that refuses a checkpoint lacking any tensor of the model or holding tensors it does not
    have: a silent `strict=False` would leave random weights under a pretrained name. Enformer registers its trunk
    twice (`_trunk.*` aliases `stem.*`, `transformer.*`, ...), and checkpoints saved without shared tensors keep one
    name of each, so a missing key is fine when a key sharing its storage was loaded."""
    result = module.load_state_dict(state, strict=False)
    tensors = module.state_dict(keep_vars=True)
    loaded_storage = {tensors[k].data_ptr() for k in tensors if k not in result.missing_keys}
    missing, seen = [], set(loaded_storage)
    for key in sorted(result.missing_keys, key=lambda k: k.startswith("_")):  # one name per tensor, the plain one
        if tensors[key].data_ptr() not in seen:
            seen.add(tensors[key].data_ptr())
            missing.append(key)
    if missing or result.unexpected_keys:
        raise ValueError(f"{source}: the checkpoint does not match {type(module).__name__}: "
                         f"{len(missing)} tensors missing ({', '.join(missing[:5])}{'...' if len(missing) > 5 else ''})"
                         f", {len(result.unexpected_keys)} unexpected ({', '.join(result.unexpected_keys[:5])})")


class OneHotDNAFeaturizer(Featurizer):
    """DNA -> indices A,C,G,T,N = 0..4 padded with -1 up to a multiple of `bin_size` (Enformer's 128 bp bins)."""

    def __call__(self, items):
        seqs = require_strings(items, "dna")
        bin_size = self.spec["bin_size"]
        rows = []
        for i, seq in enumerate(seqs):
            bad = set(seq) - set(DNA_INDEX)
            if bad:
                raise ValueError(f"dna input {i}: characters {sorted(bad)} are not A, C, G, T or N")
            rows.append([DNA_INDEX[c] for c in seq])
        width = max(math.ceil(len(r) / bin_size) for r in rows) * bin_size
        out = pad_sequences([r + [-1] * (width - len(r)) for r in rows], pad_id=-1)
        lengths = torch.tensor([len(r) for r in rows])
        out["mask"] = torch.arange(width)[None, :] < lengths[:, None]
        return out

    def output_lengths(self, mask: torch.Tensor) -> list[int]:
        return [math.ceil(n / self.spec["bin_size"]) for n in mask.sum(-1).tolist()]

@register_encoder("enformer")
class EnformerEncoder(Encoder):
    """Enformer trunk embeddings, one vector (2 x dim) per 128 bp bin; source: EleutherAI/enformer-official-rough
    or a local folder saved by enformer-pytorch."""

    featurizer_class = OneHotDNAFeaturizer

    def __init__(self, spec: dict):
        super().__init__(spec)
        config = {**spec["config"], "target_length": -1}
        enformer = _enformer().Enformer(_enformer_config()(**config))
        trunk = enformer._modules.pop("_trunk")
        object.__setattr__(enformer, "_trunk", trunk)  # keep it callable, outside the saved module tree
        enformer._modules.pop("_heads", None)
        self.enformer = enformer

    @property
    def hidden_size(self) -> int:
        return self.spec["config"]["dim"] * 2

    @property
    def bin_size(self) -> int:
        return 2 ** self.spec["config"].get("num_downsamples", 7)

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> EnformerEncoder:
        """Read config + weights ourselves: enformer-pytorch's own from_pretrained fails under transformers 5."""
        source = source or "EleutherAI/enformer-official-rough"
        pretrained = _enformer().Enformer(_enformer_config().from_pretrained(source))
        load_every_weight(pretrained, load_weights(source), source)
        return cls.wrap(pretrained, source, options)

    @classmethod
    def wrap(cls, pretrained: torch.nn.Module, source: str | None, options: dict) -> EnformerEncoder:
        config = {k: v for k, v in pretrained.config.to_dict().items() if not k.startswith("_")}
        keep = {"dim", "depth", "heads", "attn_dim_key", "dropout_rate", "attn_dropout", "pos_dropout",
                "use_checkpointing", "use_convnext", "num_downsamples", "dim_divisible_by", "use_tf_gamma",
                "output_heads", "target_length"}
        encoder = cls({"type": cls.type_name, "source": source, "config": {k: config[k] for k in keep if k in config},
                       "options": options})
        state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith(("_trunk.", "_heads."))}
        encoder.enformer.load_state_dict(state, strict=True)
        return encoder

    def featurizer_spec(self) -> dict:
        return {"type": self.type_name, "bin_size": self.bin_size}

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        one_hot = optional_import("enformer_pytorch.data", ENFORMER_HINT).seq_indices_to_one_hot(values)
        emb = self.enformer(one_hot.to(next(self.enformer.parameters()).dtype), return_only_embeddings=True)
        lengths = torch.div(mask.sum(-1) + self.bin_size - 1, self.bin_size, rounding_mode="floor")
        out_mask = torch.arange(emb.shape[1], device=emb.device)[None, :] < lengths[:, None]
        return emb, out_mask

class ByteFeaturizer(Featurizer):
    """Evo 2's character-level tokenizer: one token per base, the token id is the byte value."""

    def __call__(self, items):
        seqs = require_strings(items, "dna")
        return pad_sequences([list(s.encode("ascii")) for s in seqs], pad_id=1)

EVO2_HINT = ("The evo2 encoder needs the `evo2` package (and its `vortex` StripedHyena), which needs a CUDA GPU: "
             "pip install flash-attn evo2 (see https://github.com/ArcInstitute/evo2). Use nucleotide_transformer or "
             "enformer on CPU.")


@register_encoder("evo2")
class Evo2Encoder(Encoder):
    """Evo 2 (Arc Institute) intermediate-layer embeddings (`layer`, default `blocks.20.mlp.l3`); source: an Evo 2
    model name (`evo2_1b_base`, `evo2_7b`, `evo2_40b`).

    The network is upstream's StripedHyena module, held as the child `network`, so its weights are in the model's
    state dict and model.safetensors, and it moves, casts and freezes with the model. Upstream's `Evo2` class is only
    a loader (not an `nn.Module`): `from_source` runs it once and keeps its `.model`; a saved model rebuilds the
    architecture from the StripedHyena config kept in the spec, and `from_pretrained` fills the weights. The package
    needs CUDA, so CI tests this class against a stand-in `evo2` / `vortex` package of the same interface."""

    featurizer_class = ByteFeaturizer

    def __init__(self, spec: dict, network: torch.nn.Module | None = None):
        super().__init__(spec)
        if network is None:
            model = optional_import("vortex.model.model", EVO2_HINT)
            dotdict = optional_import("vortex.model.utils", EVO2_HINT).dotdict
            network = model.StripedHyena(dotdict(spec["config"]))
        self.network = network
        self.layer = self.options.get("layer", "blocks.20.mlp.l3")
        try:  # a wrong layer name fails here, not at the first forward
            self.network.get_submodule(self.layer)
        except AttributeError as err:
            raise ValueError(f"Evo 2 layer {self.layer!r} is not in the {spec.get('source')} network: {err}") from err

    @property
    def hidden_size(self) -> int:
        return int(self.spec["config"]["hidden_size"])

    @classmethod
    def from_source(cls, source: str | None, **options: Any) -> Evo2Encoder:
        import pkgutil

        import yaml

        source = source or "evo2_1b_base"
        evo2 = optional_import("evo2", EVO2_HINT)
        config_map = optional_import("evo2.utils", EVO2_HINT).CONFIG_MAP
        if source not in config_map:
            raise ValueError(f"Unknown Evo 2 model {source!r}; available: {sorted(config_map)}")
        config = yaml.safe_load(pkgutil.get_data("evo2", config_map[source]))
        loaded = evo2.Evo2(source)  # downloads (or finds in the HF cache) and loads the weights, once
        return cls({"type": cls.type_name, "source": source, "config": dict(config), "options": options},
                   network=loaded.model)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []

        def keep(_module, _inputs, output):
            captured.append(output[0] if isinstance(output, tuple) else output)

        handle = self.network.get_submodule(self.layer).register_forward_hook(keep)
        try:
            self.network(values)
        finally:
            handle.remove()
        return captured[0], mask
