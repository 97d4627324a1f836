"""BioReasonForCausalLM + BioReasonProcessor on tiny real-class models: every encoder x projector, exact save/load
through the Auto classes, generation, freezing, LoRA, several modalities in one prompt, and the errors."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    ENCODER_TYPES,
    MODALITY_OF,
    no_unpickling,
    sample_items,
    tiny_encoder,
    tiny_llm,
    tiny_model,
    tiny_tokenizer,
)
from transformers import AutoModelForCausalLM, AutoProcessor

from bioreason import BioReasonForCausalLM, BioReasonProcessor
from bioreason.model.composition import compose

PROJECTORS = ["linear", "mlp2x_gelu", "resampler", "mean"]


def prompt_for(kind: str, n: int = 2) -> dict:
    modality = MODALITY_OF[kind]
    return {"text": [f"Describe <{modality}>.", f"What is <{modality}>?"][:n], modality: sample_items(kind, n)}


@pytest.mark.parametrize("projector", PROJECTORS)
@pytest.mark.parametrize("kind", ENCODER_TYPES)
def test_every_encoder_and_projector_trains_saves_and_reloads_exactly(tmp_path, kind, projector):
    model, processor = tiny_model(kind, projector=projector)
    inputs = processor(**prompt_for(kind))
    modality = MODALITY_OF[kind]
    assert set(inputs) == {"input_ids", "attention_mask", f"{modality}_values", f"{modality}_mask"}

    out = model(**inputs, labels=inputs["input_ids"])
    out.loss.backward()
    projector_grads = [p.grad for p in model.model.projectors.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in projector_grads)  # features reach the loss

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.bin")) and (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    loaded_proc = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, BioReasonForCausalLM) and isinstance(loaded_proc, BioReasonProcessor)
    reloaded_inputs = loaded_proc(**prompt_for(kind))
    for key in inputs:
        assert torch.equal(inputs[key], reloaded_inputs[key])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**reloaded_inputs).logits)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
@pytest.mark.parametrize("tie", [False, True])
def test_pretrained_llm_and_encoder_weights_survive_compose_and_load(tmp_path, family, tie):
    tok = tiny_tokenizer()
    llm = tiny_llm(family, vocab_size=len(tok), tie=tie)
    encoder = tiny_encoder("esm2")
    original_llm = {k: v.clone() for k, v in llm.state_dict().items()}
    original_enc = {k: v.clone() for k, v in encoder.state_dict().items()}
    model, processor = compose(llm, {"protein": encoder}, projector="mlp2x_gelu", tokenizer=tok)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    lm = loaded.model.language_model.state_dict()
    for key, value in original_llm.items():
        if key.startswith("lm_head"):
            continue
        key = key.removeprefix("model.")
        if "embed_tokens" in key:  # resized: the old rows are kept
            assert torch.equal(lm[key][: value.shape[0]], value)
        else:
            assert torch.equal(lm[key], value), key
    for key, value in original_enc.items():
        assert torch.equal(loaded.model.encoders["protein"].state_dict()[key], value), key
    head = loaded.lm_head.weight
    assert torch.equal(head[: original_llm["lm_head.weight"].shape[0]], original_llm["lm_head.weight"])
    assert (head.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()) == tie
    assert head.shape[0] == len(processor.tokenizer)


def test_several_modalities_and_sequences_in_one_prompt():
    model, processor = tiny_model(["nucleotide_transformer", "esm2", "expression"], projector="linear")
    dna = sample_items("nucleotide_transformer", 2)
    text = ["Reference <dna> vs variant <dna>: effect on <protein> in <rna>?", "Is <protein> expressed?"]
    inputs = processor(text=text, dna=dna, protein=sample_items("esm2", 2), rna=sample_items("expression", 1))
    ids = inputs["input_ids"]
    cfg = model.config.modalities
    # per-position projection: one placeholder per encoder position of each item (NT: <cls> + 6-mers)
    assert int((ids[0] == cfg["dna"]["pad_token_id"]).sum()) == sum(1 + len(s) // 6 + len(s) % 6 for s in dna)
    assert int((ids == cfg["dna"]["start_token_id"]).sum()) == 2
    assert int((ids[1] == cfg["dna"]["pad_token_id"]).sum()) == 0
    assert int((ids == cfg["rna"]["pad_token_id"]).sum()) == 2  # expression encoder with num_tokens=2
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits
        # the second variant matters: swapping the two DNA inputs changes the first prompt's logits
        swapped = processor(text=text, dna=dna[::-1], protein=sample_items("esm2", 2),
                            rna=sample_items("expression", 1))
        assert not torch.allclose(logits[0], model(**swapped).logits[0][-logits.shape[1]:])


def test_generate_never_emits_placeholder_tokens():
    model, processor = tiny_model("esm2")
    pad = model.config.modalities["protein"]["pad_token_id"]

    def favour_placeholder(module, args, logits):  # make the placeholder the model's favourite next token
        logits = logits.clone()
        logits[..., pad] += 1000.0
        return logits

    model.lm_head.register_forward_hook(favour_placeholder)
    inputs = processor(**prompt_for("esm2"))
    model.eval()
    with torch.no_grad():
        assert (model(**inputs).logits[:, -1].argmax(-1) == pad).all()
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = out[:, inputs["input_ids"].shape[1]:]
    assert new.shape == (2, 8)
    assert not set(new.flatten().tolist()) & set(model.config.placeholder_token_ids())


def test_generation_uses_the_modality_inputs():
    model, processor = tiny_model("esm2", projector="linear")
    model.eval()
    a = processor(text=["Describe <protein>."], protein=["MKTAYIAKQRQISFVK"])
    b = processor(text=["Describe <protein>."], protein=["GGGGGGGGGGGGGGGG"])
    with torch.no_grad():
        la = model(**a).logits[0, -1]
        lb = model(**b).logits[0, -1]
        out = model.generate(**a, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert not torch.allclose(la, lb)
    assert torch.allclose(out.logits[0][0], la, atol=1e-5)  # the prefill step saw the protein features


def test_feature_placeholder_mismatch_names_both_counts():
    model, processor = tiny_model("esm2", projector="linear")
    inputs = processor(**prompt_for("esm2", 1))
    pad = model.config.modalities["protein"]["pad_token_id"]
    ids = inputs["input_ids"].clone()
    first = (ids[0] == pad).nonzero()[0, 0]
    ids[0, first] = 5
    n = int((inputs["input_ids"] == pad).sum())
    with pytest.raises(ValueError, match=f"{n - 1} <\\|protein_pad\\|> tokens in input_ids, {n} projected features"):
        model(**{**inputs, "input_ids": ids})


def test_placeholders_without_inputs_are_an_error():
    model, processor = tiny_model("esm2")
    inputs = processor(**prompt_for("esm2", 1))
    with pytest.raises(ValueError, match="no protein inputs were given"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"text": "Describe <protein> and <protein>.", "protein": ["MKT"]}, "2 <protein> markers but 1 protein inputs"),
        ({"text": "Describe <protein>."}, "1 <protein> markers but 0 protein inputs"),
        ({"text": "Describe this.", "protein": ["MKT"]}, "1 protein inputs were given but the text has no <protein>"),
        ({"text": "Describe <dna>.", "dna": ["ACGT"]}, r"this model has no dna encoder; it handles \['protein'\]"),
    ],
)
def test_processor_errors(kwargs, match):
    _, processor = tiny_model("esm2")
    with pytest.raises(ValueError, match=match):
        processor(**kwargs)


def test_model_rejects_a_modality_it_lacks():
    model, processor = tiny_model("esm2")
    inputs = processor(**prompt_for("esm2", 1))
    with pytest.raises(ValueError, match="this model has no dna encoder"):
        model(**inputs, dna_values=torch.zeros(1, 4, dtype=torch.long), dna_mask=torch.ones(1, 4, dtype=torch.bool))


def _step(model, inputs):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    opt.step()
    return {n: not torch.equal(before[n], p.detach()) for n, p in model.named_parameters()}


def test_default_freeze_policy_keeps_encoders_fixed():
    model, processor = tiny_model("esm2")
    changed = _step(model, processor(**prompt_for("esm2")))
    assert not any(v for n, v in changed.items() if n.startswith("model.encoders."))
    assert all(v for n, v in changed.items() if n.startswith("model.projectors."))
    assert any(v for n, v in changed.items() if n.startswith("model.language_model."))
    assert not model.model.encoders["protein"].training  # frozen encoders stay in eval mode (no dropout)


def test_set_trainable_flags_persist_through_save(tmp_path):
    model, processor = tiny_model("esm2")
    model.set_trainable(encoders=True, llm=False)
    changed = _step(model, processor(**prompt_for("esm2")))
    assert any(v for n, v in changed.items() if n.startswith("model.encoders."))
    assert not any(v for n, v in changed.items() if n.startswith(("model.language_model.", "lm_head")))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert all(p.requires_grad for p in loaded.model.encoders.parameters())
    assert not any(p.requires_grad for p in loaded.model.language_model.parameters())


def test_expression_encoder_is_trainable_by_default():
    model, processor = tiny_model("expression")
    changed = _step(model, processor(**prompt_for("expression")))
    assert all(v for n, v in changed.items() if n.startswith("model.encoders."))


def test_lora_trains_only_adapters_and_projectors(tmp_path):
    from bioreason.training.adaptation import apply_lora

    model, processor = tiny_model("esm2")
    peft_model = apply_lora(model, r=4, alpha=8)
    changed = _step(peft_model, processor(**prompt_for("esm2")))
    moved = {n for n, v in changed.items() if v}
    assert moved and all("lora_" in n or ".projectors." in n for n in moved)
    assert any("lora_" in n for n in moved) and any(".projectors." in n for n in moved)
    peft_model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists()


def test_lora_keeps_a_trainable_encoder_training_and_merges_it_back():
    """PEFT freezes every module it is not told to save: a trainable-by-design encoder must be one of them."""
    from bioreason.training.adaptation import apply_lora

    model, processor = tiny_model("expression")
    peft_model = apply_lora(model, r=4, alpha=8)
    changed = _step(peft_model, processor(**prompt_for("expression")))
    trained = {n for n, v in changed.items() if v and ".encoders." in n}
    assert trained and all(".modules_to_save." in n for n in trained)
    trained_weight = peft_model.base_model.model.model.encoders["rna"].modules_to_save["default"].mlp[0].weight
    merged = peft_model.merge_and_unload()
    assert torch.equal(merged.model.encoders["rna"].mlp[0].weight, trained_weight)


def test_a_trainable_by_design_encoder_can_be_frozen_and_stays_frozen_under_lora(tmp_path):
    from bioreason.training.adaptation import apply_lora
    from bioreason.training.arguments import ModelArguments
    from bioreason.training.prepare import apply_freeze_policy

    model, processor = tiny_model("expression")
    apply_freeze_policy(model, ModelArguments(encoders_trainable=False))
    assert model.config.modalities["rna"]["encoder"]["trainable"] is False
    changed = _step(apply_lora(model, r=4), processor(**prompt_for("expression")))
    assert not any(v for n, v in changed.items() if ".encoders." in n)
    apply_freeze_policy(model, ModelArguments())  # back to the encoder's default
    assert model.model.encoder_trainable("rna") and "trainable" not in model.config.modalities["rna"]["encoder"]
    model, _ = tiny_model("esm2")
    apply_freeze_policy(model, ModelArguments(encoders_trainable=True))  # a pretrained encoder, on request
    assert model.model.encoder_trainable("protein")


def test_rl_stage_can_leave_the_projectors_as_sft_left_them():
    from bioreason.training.arguments import ModelArguments
    from bioreason.training.prepare import prepare_model

    model, processor = tiny_model("esm2")
    stage = ModelArguments(use_peft=True, lora_r=4, projectors_trainable=False, feature_cache="off")
    peft_model = prepare_model(model, stage)
    moved = {n for n, v in _step(peft_model, processor(**prompt_for("esm2"))).items() if v}
    assert moved and all("lora_" in n for n in moved)  # the LLM's adapters only


def test_attn_implementation_reaches_the_llm(tmp_path):
    model, _ = tiny_model("esm2", attn_implementation="eager")
    assert model.model.language_model.config._attn_implementation == "eager"
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert loaded.model.language_model.config._attn_implementation == "sdpa"


def test_default_attention_is_sdpa_without_cuda_and_flash_attn():
    import importlib.util

    from bioreason.model.composition import default_attn_implementation

    expected = ("flash_attention_2" if torch.cuda.is_available() and importlib.util.find_spec("flash_attn")
                else "sdpa")
    assert default_attn_implementation() == expected
    model, _ = tiny_model("esm2")
    assert model.model.language_model.config._attn_implementation == expected


def test_bf16_forward_follows_the_fp32_forward(tmp_path):
    """The model cast to bf16 computes what it computes in fp32, to bf16's precision: the logits agree within a
    tolerance scaled to their spread and pick the same next token at most positions (a cast that skipped a module,
    or a mask / position bug that only bf16 hits, moves them far more)."""
    model, processor = tiny_model("enformer", projector="resampler")
    inputs = processor(**prompt_for("enformer"))
    with torch.no_grad():
        full = model(**inputs).logits
        half = model.to(torch.bfloat16)(**inputs).logits
    assert half.dtype == torch.bfloat16 and torch.isfinite(half.float()).all()
    error = (half.float() - full).abs().max() / full.std()
    assert error < 0.15, f"bf16 logits are {error:.3f} standard deviations from fp32's"
    assert (half.float().argmax(-1) == full.argmax(-1)).float().mean() >= 0.8


def test_offline_loads_leave_hub_kernels_off_unless_asked(tmp_path, monkeypatch):
    """transformers kernelizes loaded models by default and, on CUDA, resolves kernel repos on the hub; offline that
    fails the load (seen on an H200). Offline, our loads pass use_kernels=False unless the caller chose."""
    from huggingface_hub import constants

    from bioreason.model.modeling_bioreason import offline_kernel_default

    model, _ = tiny_model("esm2")
    model.save_pretrained(tmp_path)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert offline_kernel_default({"dtype": "auto"}) == {"dtype": "auto", "use_kernels": False}
    assert offline_kernel_default({"use_kernels": True}) == {"use_kernels": True}
    loaded = BioReasonForCausalLM.from_pretrained(tmp_path)
    assert loaded.use_kernels is False
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert offline_kernel_default({"dtype": "auto"}) == {"dtype": "auto"}


def test_compose_says_nothing_that_is_not_about_the_run():
    """transformers' notice about mean-initialised new embeddings (our deliberate choice) printed on every compose
    and quickstart; it is silenced at the source. `warning_once` caches, so the cache is cleared to make it fire."""
    import logging

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    hf_logger = logging.getLogger("transformers")  # transformers' handler keeps its own stream: listen beside it
    hf_logger.addHandler(handler)
    logging.Logger.warning_once.cache_clear()
    try:
        tiny_model("antiberty", projector="mean")
    finally:
        hf_logger.removeHandler(handler)
    assert not [m for m in seen if "multivariate normal" in m], seen


def test_embedding_output_norm_is_the_llms_embedding_norm_and_survives_save_load(tmp_path):
    tok = tiny_tokenizer()
    llm = tiny_llm("llama", vocab_size=len(tok))
    expected = float(llm.get_input_embeddings().weight.detach().float().norm(dim=-1).mean())
    model, processor = compose(llm, {"protein": tiny_encoder("esm2")}, tokenizer=tok,
                               projector={"type": "mlp2x_gelu", "options": {"output_norm": "embedding"}})
    projector = model.model.projectors["protein"]
    assert projector.output_norm == pytest.approx(expected, abs=1e-4)
    assert model.config.modalities["protein"]["projector"]["options"]["output_norm"] == projector.output_norm
    inputs = processor(**prompt_for("esm2"))
    features = model.model.get_modality_features("protein", inputs["protein_values"], inputs["protein_mask"])
    assert torch.allclose(features.norm(dim=-1), torch.full(features.shape[:1], projector.output_norm), atol=1e-3)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.model.projectors["protein"].output_norm == projector.output_norm
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**inputs).logits)


@pytest.mark.parametrize(("value", "expected"), [("embedding", "embedding"), ("3.5", 3.5)])
def test_projector_output_norm_argument_reaches_the_projector_spec(monkeypatch, value, expected):
    import bioreason.model.composition as composition
    from bioreason.training.arguments import ModelArguments
    from bioreason.training.prepare import load_model

    seen = {}

    def fake_compose(llm, encoders, projector, **kwargs):
        seen["projector"] = projector
        raise RuntimeError("stop after the spec")

    monkeypatch.setattr(composition, "compose", fake_compose)
    args = ModelArguments(llm="unused", projector="resampler", num_queries=8, projector_output_norm=value)
    with pytest.raises(RuntimeError, match="stop after the spec"):
        load_model(args)
    assert seen["projector"] == {"type": "resampler", "options": {"num_queries": 8, "output_norm": expected}}


def test_a_model_folder_or_llm_with_only_a_pickle_is_refused_unread(tmp_path, monkeypatch):
    """A BioReason folder and a decoder LLM load from safetensors only: the same weights saved as a pytorch_model.bin
    (a pickle, which runs code when read) are refused, and torch.load is never reached."""
    from bioreason.model.composition import load_llm

    model, _ = tiny_model("esm2")
    model.save_pretrained(tmp_path / "bio")
    (tmp_path / "bio" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "bio" / "pytorch_model.bin")
    llm = tiny_llm()
    llm.save_pretrained(tmp_path / "llm")
    tiny_tokenizer().save_pretrained(tmp_path / "llm")
    state = llm.state_dict()
    (tmp_path / "llm" / "model.safetensors").unlink()
    torch.save(state, tmp_path / "llm" / "pytorch_model.bin")
    no_unpickling(monkeypatch)
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "bio")
    with pytest.raises(OSError, match="model.safetensors"):
        load_llm(str(tmp_path / "llm"))
