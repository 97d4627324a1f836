"""The frozen-encoder feature cache: same outputs as the uncached path, each unique item encoded once, entries shared
through disk, invalidated when the encoder's weights change, never used for a trainable encoder."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import ENCODER_TYPES, MODALITY_OF, sample_items, tiny_model

from bioreason.feature_cache import FeatureCache

CACHED_TYPES = [k for k in ENCODER_TYPES if k not in ("expression", "precomputed")]  # trainable / identity encoders


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


def test_disk_entries_are_shared_between_models_and_invalidated_by_new_weights(tmp_path):
    model, processor = tiny_model("antiberty")
    model.eval()
    batch, modality = _inputs(processor, "antiberty", sample_items("antiberty", n=2))
    with torch.no_grad():
        model.enable_feature_cache(tmp_path)
        expected = model(**batch).logits
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
