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

The disk cache cannot hurt a run: each file carries its key and a checksum of its tensors in the safetensors metadata
and is verified on read (a truncated, corrupt or mismatched file is deleted with a warning and recomputed, never
served, never fatal); it is bounded (`max_disk_bytes`, least recently used first, a file's mtime being its last use)
with eviction that tolerates other processes evicting and writing the same folder; writes go through a temporary file
renamed into place, and temporary files a killed writer left behind are removed. `bioreason cache info|clear` shows and
frees it.

The policy of when to use it is the model's (`BioReasonModel.get_modality_features`): only for frozen encoders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

Entry = tuple[torch.Tensor, torch.Tensor]  # (embeddings [L, D], mask [L]) of one item
FORMAT = "bioreason-feature-cache/1"
DEFAULT_MAX_DISK_BYTES = 20 << 30
STALE_TMP_SECONDS = 3600  # a writer takes well under a second; an older .tmp file belongs to a killed process
logger = logging.getLogger(__name__)


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor (any dtype, any device), for content hashes."""
    return t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes()


class FeatureCache:
    """Memory (+ optional disk) cache of per-item encoder outputs. Shared, not copied, by `copy.deepcopy` (a GRPO
    reference model built by copying the policy has the same frozen encoders and should hit the same entries)."""

    def __init__(self, directory: str | os.PathLike | None = None, max_memory_bytes: int = 2 << 30,
                 max_disk_bytes: int = DEFAULT_MAX_DISK_BYTES):
        self.directory = os.fspath(directory) if directory is not None else None
        self.max_memory_bytes = max_memory_bytes
        self.max_disk_bytes = max_disk_bytes
        self._disk_bytes: int | None = None  # this process's running estimate; a scan sets it exactly
        self.rejected = self.evicted = 0
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
        """The entry on `device`: an entry remembered from a pass on another device (the baselines run before the
        Trainer moves the model to CUDA) is moved, not handed back where it was computed."""
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            return entry[0].to(device), entry[1].to(device)
        if self.directory is None:
            return None
        entry = self._read(key, device)
        if entry is not None:
            self._remember(key, entry)
        return entry

    def _read(self, key: str, device: torch.device) -> Entry | None:
        """The verified entry of `key` from disk, or None (absent, or rejected and deleted)."""
        from safetensors import safe_open

        path = self._path(key)
        try:
            with safe_open(path, framework="pt") as fh:
                meta = fh.metadata() or {}
                data = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open is no dict)
        except FileNotFoundError:  # never written, or evicted by another process a moment ago
            return None
        except Exception as err:  # a truncated or corrupt file: safetensors raises its own error types
            if not os.path.exists(path):
                # gone between the lookup and the open: safetensors reports an entry evicted by another process
                # at that moment as a RuntimeError ("No such file or directory"), not FileNotFoundError. A miss.
                return None
            return self._reject(path, f"unreadable ({type(err).__name__}: {err})")
        if meta.get("format") != FORMAT or meta.get("key") != key:
            return self._reject(path, f"its metadata names key {meta.get('key')!r}, format {meta.get('format')!r}")
        if set(data) != {"embeddings", "mask"} or meta.get("checksum") != entry_checksum(data):
            return self._reject(path, "its tensors do not match the checksum written with them")
        try:
            os.utime(path)  # last use, for least-recently-used eviction (atime is often not kept)
        except OSError:
            pass
        return data["embeddings"].to(device), data["mask"].to(device).bool()

    def _reject(self, path: str, why: str) -> None:
        logger.warning("feature cache: %s is %s; deleted, the features are recomputed", path, why)
        self.rejected += 1
        _remove(path)
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

        if self._disk_bytes is None:
            self.scan(evict=True)  # once a process: the folder's size, and whatever a killed writer left
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = {"embeddings": entry[0].detach().contiguous().cpu(),
                "mask": entry[1].to(torch.uint8).contiguous().cpu()}
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        os.close(fd)
        try:
            save_file(data, tmp, metadata={"format": FORMAT, "key": key, "checksum": entry_checksum(data)})
            os.replace(tmp, path)  # atomic: concurrent runs of a study never read half a file
        except OSError as err:  # a full disk costs the cache entry, not the run
            _remove(tmp)
            logger.warning("feature cache: could not write %s (%s); continuing without it", path, err)
            return
        try:
            self._disk_bytes += os.path.getsize(path)
        except FileNotFoundError:  # evicted by another process already
            pass
        if self._disk_bytes > self.max_disk_bytes:
            self.scan(evict=True)

    def scan(self, evict: bool = False) -> dict[str, Any]:
        """Walk the folder: count entries and bytes, remove stale `.tmp` files, and with `evict` delete the least
        recently used entries until the folder is at 90% of `max_disk_bytes`. Files that vanish mid-walk (another
        process evicting) are skipped."""
        entries, tmp_files, removed_tmp = [], 0, 0
        now = time.time()
        for root, _, files in os.walk(self.directory or ""):
            for name in files:
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                if name.endswith(".tmp"):
                    if now - st.st_mtime > STALE_TMP_SECONDS:
                        removed_tmp += _remove(path)
                    else:
                        tmp_files += 1
                elif name.endswith(".safetensors"):
                    entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        evicted = 0
        if evict and total > self.max_disk_bytes:
            for _, size, path in sorted(entries):
                if total <= 0.9 * self.max_disk_bytes:
                    break
                if _remove(path):
                    evicted += 1
                total -= size  # gone either way: removed here or by another process
        self._disk_bytes = total
        self.evicted += evicted
        return {"directory": self.directory, "entries": len(entries) - evicted, "bytes": total,
                "max_bytes": self.max_disk_bytes, "evicted": evicted, "tmp_files": tmp_files,
                "removed_tmp_files": removed_tmp}

    def clear_disk(self) -> dict[str, int]:
        """Delete every entry and temporary file in the folder (other processes recompute what they need)."""
        removed = freed = 0
        for root, _, files in os.walk(self.directory or ""):
            for name in files:
                if name.endswith((".safetensors", ".tmp")):
                    path = os.path.join(root, name)
                    try:
                        size = os.path.getsize(path)
                    except FileNotFoundError:
                        continue
                    if _remove(path):
                        removed, freed = removed + 1, freed + size
        self._disk_bytes = 0
        return {"removed_files": removed, "freed_bytes": freed}

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
                "memory_bytes": self._memory_bytes, "rejected": self.rejected, "evicted": self.evicted}


def entry_checksum(data: dict[str, torch.Tensor]) -> str:
    """Hash of an entry's tensors (names, dtypes, shapes, bytes): written into the file, checked on read."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(data):
        t = data[name]
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(tensor_bytes(t))
    return digest.hexdigest()


def _remove(path: str) -> bool:
    """Delete a file; False if it was already gone (another process removed it)."""
    try:
        os.remove(path)
        return True
    except FileNotFoundError:
        return False


def default_cache_dir() -> str:
    """`$BIOREASON_CACHE/features` (the Makefile points BIOREASON_CACHE into the checkout), else ~/.cache/bioreason."""
    root = os.environ.get("BIOREASON_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "bioreason")
    return os.path.join(root, "features")
