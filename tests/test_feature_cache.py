"""The frozen-encoder feature cache: same outputs as the uncached path, each unique item encoded once, entries shared
through disk, invalidated when the encoder's weights change, never used for a trainable encoder."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from conftest import ENCODER_TYPES, MODALITY_OF, sample_items, tiny_model

from bioreason.model.feature_cache import FeatureCache

CACHED_TYPES = [k for k in ENCODER_TYPES if k not in ("expression", "precomputed", "kmer")]  # trainable / identity


def _inputs(processor, kind, items):
    modality = MODALITY_OF[kind]
    text = [f"<{modality}> what is it?" for _ in items]
    return processor(text=text, **{modality: list(items)}), modality


def _count_calls(encoder):
    calls = []
    encoder.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("kind", CACHED_TYPES)
def test_cached_logits_equal_uncached_and_each_item_is_encoded_once(kind):
    model, processor = tiny_model(kind)
    model.eval()
    items = [sample_items(kind, n=1, seed=seed)[0] for seed in range(3)]
    batch, modality = _inputs(processor, kind, [items[0], items[1], items[0], items[2]])  # a duplicate row
    with torch.no_grad():
        plain = model(**batch).logits
        cache = model.enable_feature_cache()
        calls = _count_calls(model.model.encoders[modality])
        first = model(**batch).logits
        second = model(**batch).logits
    assert torch.allclose(plain, first, atol=1e-5) and torch.allclose(plain, second, atol=1e-5)
    assert calls == [3]  # 4 rows, 3 unique items, one encoder call; the second forward hit every entry
    assert cache.stats()["encoded_items"] == 3 and cache.hits == 1 + 4


def test_a_sequence_hits_in_any_batch_width_for_mask_honouring_encoders():
    model, processor = tiny_model("esm2", projector="linear")
    model.eval()
    short, long = sample_items("esm2", n=2, seed=1)
    cache = model.enable_feature_cache()
    with torch.no_grad():
        alone, modality = _inputs(processor, "esm2", [short])
        model(**alone)
        together, _ = _inputs(processor, "esm2", [long, short])  # `short` is now padded to `long`'s width
        logits = model(**together).logits
        model.disable_feature_cache()
        plain = model(**together).logits
    assert cache.hits == 1 and cache.misses == 2
    assert torch.allclose(logits, plain, atol=1e-5)


def _disk_model(tmp_path):
    """A tiny AntiBERTy model with a disk cache in `tmp_path`, and its logits on two items (now cached)."""
    model, processor = tiny_model("antiberty")
    model.eval()
    batch, modality = _inputs(processor, "antiberty", sample_items("antiberty", n=2))
    with torch.no_grad():
        model.enable_feature_cache(tmp_path)
        expected = model(**batch).logits
    return model, batch, modality, expected


def test_disk_entries_are_shared_between_models_and_invalidated_by_new_weights(tmp_path):
    model, batch, modality, expected = _disk_model(tmp_path)
    with torch.no_grad():
        files = sorted(tmp_path.rglob("*.safetensors"))
        assert len(files) == 2
        other = copy.deepcopy(model)  # a second run of the same model: new process memory, same disk
        cache = other.enable_feature_cache(tmp_path)
        calls = _count_calls(other.model.encoders[modality])
        assert torch.allclose(other(**batch).logits, expected, atol=1e-6)
        assert calls == [] and cache.hits == 2
        # new encoder weights (loaded in place, as from_pretrained / load_state_dict do) invalidate every entry
        encoder = other.model.encoders[modality]
        state = {k: v + 0.01 for k, v in encoder.state_dict().items() if v.is_floating_point()}
        encoder.load_state_dict(state, strict=False)
        changed = other(**batch).logits
        other.disable_feature_cache()
        assert calls == [2] and torch.allclose(changed, other(**batch).logits, atol=1e-6)
        assert not torch.allclose(changed, expected, atol=1e-4)
    assert len(sorted(tmp_path.rglob("*.safetensors"))) == 4


def test_trainable_encoders_bypass_the_cache_and_get_gradients():
    model, processor = tiny_model("esm2", projector="linear")
    model.set_trainable(encoders=True)
    cache = model.enable_feature_cache()
    batch, _ = _inputs(processor, "esm2", sample_items("esm2", n=2))
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert cache.hits == cache.misses == 0
    assert any(p.grad is not None for p in model.model.encoders["protein"].parameters())


def test_autocast_outputs_are_cached_apart_from_fp32_ones():
    model, processor = tiny_model("esm2", projector="linear")
    model.eval()
    cache = model.enable_feature_cache()
    batch, _ = _inputs(processor, "esm2", sample_items("esm2", n=1))
    with torch.no_grad():
        model(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(**batch)
    assert cache.misses == 2 and cache.hits == 0


def test_deepcopy_shares_the_cache_and_memory_is_bounded():
    cache = FeatureCache(max_memory_bytes=1000)
    assert copy.deepcopy(cache) is cache
    for i in range(10):
        cache._put(str(i), (torch.zeros(10, 4), torch.ones(10, dtype=torch.bool)))  # 170 bytes each
    assert cache.stats()["memory_bytes"] <= 1000 and "9" in cache._memory and "0" not in cache._memory


# The disk cache cannot hurt a run -------------------------------------------------------------------------------------
def _entry(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((8, 4), float(i)), torch.ones(8, dtype=torch.bool)


@pytest.mark.parametrize("damage", ["truncate", "flip", "swap"])
def test_a_damaged_entry_is_deleted_and_recomputed_never_served(tmp_path, damage, caplog):
    model, batch, modality, expected = _disk_model(tmp_path)
    first, second = sorted(tmp_path.rglob("*.safetensors"))
    raw = first.read_bytes()
    if damage == "truncate":  # a writer killed mid-file on a filesystem without atomic rename, a full disk
        first.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # bit rot in the tensor data: the header still parses
        first.write_bytes(raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:]))
    else:  # another entry's file under this key
        first.write_bytes(second.read_bytes())
    other = copy.deepcopy(model)
    cache = other.enable_feature_cache(tmp_path)
    calls = _count_calls(other.model.encoders[modality])
    with torch.no_grad(), caplog.at_level("WARNING", logger="bioreason.model.feature_cache"):
        logits = other(**batch).logits
    assert torch.allclose(logits, expected, atol=1e-6)
    assert cache.rejected == 1 and calls == [1] and cache.hits == 1  # only the damaged item was encoded again
    assert str(first) in caplog.text and "recomputed" in caplog.text
    fresh = FeatureCache(tmp_path)  # the file was rewritten whole
    assert fresh._read(first.stem, torch.device("cpu")) is not None and fresh.rejected == 0


def test_the_disk_bound_evicts_the_least_recently_used_entries(tmp_path):
    import os
    import time

    size = _entry_size(tmp_path)
    cache = FeatureCache(tmp_path, max_memory_bytes=0, max_disk_bytes=10 * size)
    for i in range(8):
        cache._put(f"{i:02d}" * 20, _entry(i))
        os.utime(cache._path(f"{i:02d}" * 20), (time.time() - 100 + i, time.time() - 100 + i))
    assert cache._get("00" * 20, torch.device("cpu")) is not None  # read: now the most recently used
    for i in range(8, 14):
        cache._put(f"{i:02d}" * 20, _entry(i))
    on_disk = {p.stem for p in tmp_path.rglob("*.safetensors")}
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.safetensors")) <= 10 * size
    assert "00" * 20 in on_disk and "01" * 20 not in on_disk and "13" * 20 in on_disk
    assert cache.evicted > 0 and cache.scan()["entries"] == len(on_disk)


def _entry_size(directory) -> int:
    import os

    cache = FeatureCache(directory, max_memory_bytes=0)
    cache._put("ff" * 20, _entry(0))
    size = os.path.getsize(cache._path("ff" * 20))
    cache.clear_disk()
    return size


WRITER = """
import sys, torch
from bioreason.model.feature_cache import FeatureCache
cache = FeatureCache(sys.argv[1], max_memory_bytes=0, max_disk_bytes=int(sys.argv[2]))
for rep in range(3):
    for i in range(60):
        cache._put(f"{i:040d}", (torch.full((16, 8), float(i)), torch.ones(16, dtype=torch.bool)))
        cache._get(f"{(i * 7) % 60:040d}", torch.device("cpu"))
print(cache.rejected)
"""


@pytest.mark.parametrize("bound", [1 << 30, 20_000])
def test_two_processes_writing_the_same_keys_at_once(tmp_path, bound):
    """Same keys, same folder, at the same time, with and without eviction racing: no reader ever sees a bad
    entry, and what is left on disk is whole."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(bound)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "0", err[-2000:]  # no entry was ever rejected
    assert not list(tmp_path.rglob("*.tmp"))
    reader = FeatureCache(tmp_path)
    files = list(tmp_path.rglob("*.safetensors"))
    assert files
    for path in files:
        entry = reader._read(path.stem, torch.device("cpu"))
        assert entry is not None and torch.equal(entry[0], torch.full((16, 8), float(int(path.stem))))
    if bound == 1 << 30:
        assert len(files) == 60


def test_stale_temporary_files_are_removed_and_the_cli_shows_and_frees_the_cache(tmp_path, capsys):
    import os
    import time

    from bioreason.cli import main

    cache = FeatureCache(tmp_path)
    cache._put("ab" * 20, _entry(1))
    stale, fresh = tmp_path / "ab" / "killed.tmp", tmp_path / "ab" / "writing.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert main(["cache", "info", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 entries" in out and "1 temporary files being written; 1 stale ones removed" in out
    assert not stale.exists() and fresh.exists()
    assert main(["cache", "clear", "--dir", str(tmp_path)]) == 0
    assert "removed 2 files" in capsys.readouterr().out
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("*.tmp"))


def test_an_entry_evicted_by_another_process_during_the_open_is_a_miss_not_a_rejection(tmp_path, monkeypatch):
    """safetensors reports a file removed between the lookup and the open as a RuntimeError, not FileNotFoundError
    (seen in the two-process eviction race); that is another process's eviction, not a damaged entry."""
    import safetensors

    cache = FeatureCache(tmp_path)
    key = "ef" * 20
    cache._put(key, _entry(3))
    path = cache._path(key)

    def evicted_meanwhile(name, *args, **kwargs):
        os.remove(name)  # the other process's eviction, just before this one opens the file
        raise RuntimeError(f"unable to open file <{name}> in read-only mode: No such file or directory (2)")

    monkeypatch.setattr(safetensors, "safe_open", evicted_meanwhile)
    assert cache._read(key, torch.device("cpu")) is None and cache.rejected == 0
    cache._put(key, _entry(3))  # a file that is there but unreadable is still rejected and deleted
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bad header")))
    assert cache._read(key, torch.device("cpu")) is None and cache.rejected == 1 and not os.path.exists(path)


def test_a_full_disk_costs_the_entry_not_the_run(tmp_path, monkeypatch, caplog):
    import errno

    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    cache = FeatureCache(tmp_path)
    with caplog.at_level("WARNING", logger="bioreason.model.feature_cache"):
        cache._put("cd" * 20, _entry(2))
    assert "No space left on device" in caplog.text
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.safetensors"))
    assert torch.equal(cache._get("cd" * 20, torch.device("cpu"))[0], _entry(2)[0])  # still served from memory
