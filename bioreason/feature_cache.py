"""A cache of frozen-encoder outputs, keyed by input content and encoder fingerprint.

A frozen encoder is a fixed function of its input, yet training re-runs it for every epoch, every GRPO sample (each
prompt appears G times in a batch), the reference-model pass and every evaluation. With ESM2-650M or Enformer in front
of a small LLM that is most of the compute. The cache computes each unique item once:

- the key of an item is a hash of its input row (trimmed to its valid prefix for encoders that honour their padding
  mask, so the same sequence hits whatever batch it lands in), its dtype, the autocast state, and the encoder's
  fingerprint: a hash of its type, spec and every parameter / buffer byte. The fingerprint is recomputed whenever a
  tensor of the encoder is modified in place (PyTorch's version counters), so loading or training new weights
  invalidates every entry without any bookkeeping by the caller;
- entries live in memory (least-recently-used, bounded in bytes) and, with `directory`, on disk as one safetensors file
  per item, so the runs of a study share them;
- duplicates within one batch are encoded once, misses are encoded together in one call.

The policy of when to use it is the model's (`BioReasonModel.get_modality_features`): only for frozen encoders.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

Entry = tuple[torch.Tensor, torch.Tensor]  # (embeddings [L, D], mask [L]) of one item


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor (any dtype, any device), for content hashes."""
    return t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes()


class FeatureCache:
    """Memory (+ optional disk) cache of per-item encoder outputs. Shared, not copied, by `copy.deepcopy` (a GRPO
    reference model built by copying the policy has the same frozen encoders and should hit the same entries)."""

    def __init__(self, directory: str | os.PathLike | None = None, max_memory_bytes: int = 2 << 30):
        self.directory = os.fspath(directory) if directory is not None else None
        self.max_memory_bytes = max_memory_bytes
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self._memory_bytes = 0
        self._fingerprints: dict[int, tuple[tuple, str]] = {}
        self.hits = self.misses = self.encoded_items = self.encoder_calls = 0

    def __deepcopy__(self, memo: dict) -> FeatureCache:
        return self

    def __repr__(self) -> str:
        return (f"FeatureCache(directory={self.directory!r}, entries={len(self._memory)}, hits={self.hits}, "
                f"misses={self.misses})")

    # Keys ---------------------------------------------------------------------------------------------------------
    def fingerprint(self, encoder: nn.Module) -> str:
        """Hash of the encoder's spec and weights; recomputed only when a tensor's version counter moved."""
        tensors = [*encoder.parameters(), *encoder.buffers()]
        state = tuple((t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for t in tensors)
        known = self._fingerprints.get(id(encoder))
        if known is not None and known[0] == state:
            return known[1]
        digest = hashlib.blake2b(digest_size=16)
        digest.update(json.dumps(getattr(encoder, "spec", {}), sort_keys=True, default=str).encode())
        for name, t in [*encoder.named_parameters(), *encoder.named_buffers()]:
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(tensor_bytes(t))
        self._fingerprints[id(encoder)] = (state, digest.hexdigest())
        return digest.hexdigest()

    @staticmethod
    def _valid_length(mask_row: torch.Tensor) -> int:
        valid = mask_row.reshape(mask_row.shape[0], -1).any(-1).nonzero()
        return int(valid[-1]) + 1 if len(valid) else 0

    def _item_keys(self, fingerprint: str, values: torch.Tensor, mask: torch.Tensor, trim: bool) -> list[str]:
        device = values.device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        prefix = f"{fingerprint}|{values.dtype}|{autocast}|".encode()
        keys = []
        values_cpu, mask_cpu = values.detach().cpu(), mask.detach().cpu()
        for i in range(values.shape[0]):
            row, mrow = values_cpu[i], mask_cpu[i]
            if trim:
                n = self._valid_length(mrow)
                row, mrow = row[:n], mrow[:n]
            digest = hashlib.blake2b(prefix, digest_size=20)
            digest.update(str(tuple(row.shape)).encode())
            digest.update(tensor_bytes(row))
            digest.update(tensor_bytes(mrow.to(torch.uint8)))
            keys.append(digest.hexdigest())
        return keys

    # Storage ------------------------------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], f"{key}.safetensors")

    def _get(self, key: str, device: torch.device) -> Entry | None:
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            return entry
        if self.directory is not None and os.path.exists(self._path(key)):
            from safetensors.torch import load_file

            data = load_file(self._path(key), device=str(device))
            entry = (data["embeddings"], data["mask"].bool())
            self._remember(key, entry)
            return entry
        return None

    def _remember(self, key: str, entry: Entry) -> None:
        size = sum(t.numel() * t.element_size() for t in entry)
        if size > self.max_memory_bytes:
            return
        self._memory[key] = entry
        self._memory_bytes += size
        while self._memory_bytes > self.max_memory_bytes:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= sum(t.numel() * t.element_size() for t in old)

    def _put(self, key: str, entry: Entry) -> None:
        self._remember(key, entry)
        if self.directory is None:
            return
        from safetensors.torch import save_file

        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        os.close(fd)
        save_file({"embeddings": entry[0].contiguous().cpu(), "mask": entry[1].to(torch.uint8).contiguous().cpu()},
                  tmp)
        os.replace(tmp, path)  # atomic: concurrent runs of a study never read half a file

    def clear(self) -> None:
        """Drop the in-memory entries (files on disk stay: they are still valid for the same encoder)."""
        self._memory.clear()
        self._memory_bytes = 0

    # Encoding -----------------------------------------------------------------------------------------------------
    def encode(self, encoder: nn.Module, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`encoder(values, mask)` for a frozen encoder, item by item from the cache; only unique misses are run."""
        trim = bool(getattr(encoder, "honours_padding_mask", False))
        keys = self._item_keys(self.fingerprint(encoder), values, mask, trim)
        entries: dict[str, Entry] = {}
        missing: dict[str, int] = {}  # key -> first row holding it
        for i, key in enumerate(keys):
            if key in entries or key in missing:
                continue
            entry = self._get(key, values.device)
            if entry is None:
                missing[key] = i
            else:
                entries[key] = entry
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            rows = torch.tensor(list(missing.values()), device=values.device)
            sub_values, sub_mask = values.index_select(0, rows), mask.index_select(0, rows)
            if trim:  # the misses alone may be shorter than the batch: encode at their own width
                width = max(self._valid_length(m) for m in sub_mask.cpu())
                sub_values, sub_mask = sub_values[:, :width], sub_mask[:, :width]
            with torch.no_grad():
                emb, emb_mask = encoder(sub_values, sub_mask)
            self.encoder_calls += 1
            self.encoded_items += len(missing)
            for j, key in enumerate(missing):
                n = self._valid_length(emb_mask[j]) if trim else emb.shape[1]
                entry = (emb[j, :n].detach().clone(), emb_mask[j, :n].clone())
                self._put(key, entry)
                entries[key] = entry
        return self._assemble([entries[k] for k in keys])

    @staticmethod
    def _assemble(items: list[Entry]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(e.shape[0] for e, _ in items)
        first = items[0][0]
        emb = first.new_zeros((len(items), width, *first.shape[1:]))
        mask = torch.zeros((len(items), width), dtype=torch.bool, device=first.device)
        for i, (e, m) in enumerate(items):
            emb[i, : e.shape[0]] = e
            mask[i, : m.shape[0]] = m
        return emb, mask

    def stats(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "encoder_calls": self.encoder_calls,
                "encoded_items": self.encoded_items, "memory_entries": len(self._memory),
                "memory_bytes": self._memory_bytes}


def default_cache_dir() -> str:
    """`$BIOREASON_CACHE/features` (the Makefile points BIOREASON_CACHE into the checkout), else ~/.cache/bioreason."""
    root = os.environ.get("BIOREASON_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bioreason")
    return os.path.join(root, "features")
