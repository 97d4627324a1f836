"""The compact LM head (`bioreason.model.lm_head`): log-probs, entropies, loss and gradients equal the full-head paths
(the model's own cross-entropy and TRL's fused head) in fp32; it projects only labelled rows; an SFT step through
`BioSFTTrainer` updates the weights as TRL's own SFTTrainer does; the GRPO trainers carry it on policy and reference."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import sample_items, tiny_model
from trl.trainer.utils import add_fused_lm_head

from bioreason.model.lm_head import add_compact_lm_head, token_logprobs
from bioreason.training.adaptation import apply_lora


def batch_with_labels(processor):
    items = sample_items("antiberty", n=2, seed=1)
    batch = processor(text=["<protein> which chain is it? heavy", "<protein> and this one, which? kappa"],
                      protein=items, padding_side="right")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :-3] = -100  # the loss sits on the last few tokens only, as SFT's assistant turn does
    return dict(batch), labels


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_loss_and_gradients_equal_the_full_head(family):
    torch.manual_seed(0)
    model, processor = tiny_model("antiberty", projector="mean", family=family)
    batch, labels = batch_with_labels(processor)
    full = copy.deepcopy(model)
    full_loss = full(**batch, labels=labels).loss  # the model's own cross-entropy over every position
    full_loss.backward()
    add_compact_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    out = model(**batch, labels=labels, fused_lm_head=True)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(full_loss.item(), abs=1e-5)
    full_grads = {n: p.grad for n, p in full.named_parameters() if p.grad is not None}
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == full_grads.keys() and grads
    for name, grad in grads.items():
        assert torch.allclose(grad, full_grads[name], atol=1e-5), name


def test_fields_equal_trl_fused_head_with_temperature():
    torch.manual_seed(0)
    model, processor = tiny_model("antiberty", projector="mean")
    batch, labels = batch_with_labels(processor)
    trl_model = copy.deepcopy(model)
    add_fused_lm_head(trl_model, temperature=0.7, outputs=("log_probs", "entropy", "is_top1"))
    add_compact_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy", "is_top1"))
    ours = model(**batch, labels=labels, fused_lm_head=True)
    theirs = trl_model(**batch, labels=labels, fused_lm_head=True)
    assert torch.equal(ours.label_mask, theirs.label_mask)
    for name in ("log_probs", "entropy"):
        assert torch.allclose(getattr(ours, name), getattr(theirs, name), atol=1e-5), name
    assert torch.equal(ours.is_top1, theirs.is_top1)
    assert (ours.log_probs[~ours.label_mask] == 0).all()
    plain = model(**batch)  # without fused_lm_head: the model's own forward, logits over every position
    assert plain.logits.shape[:2] == batch["input_ids"].shape


def test_only_labelled_rows_are_projected_and_chunks_match():
    torch.manual_seed(0)
    hidden = torch.randn(10, 8, requires_grad=True)
    weight = torch.randn(30, 8, requires_grad=True)
    targets = torch.randint(0, 30, (10,))
    one = token_logprobs(hidden, weight, None, targets, outputs=("entropy",))
    one["log_probs"].sum().backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    chunked = token_logprobs(hidden, weight, None, targets, outputs=("entropy",), chunk_rows=3)
    chunked["log_probs"].sum().backward()
    assert torch.allclose(one["log_probs"], chunked["log_probs"]) and torch.allclose(one["entropy"],
                                                                                      chunked["entropy"])
    assert torch.allclose(grads[0], hidden.grad, atol=1e-6) and torch.allclose(grads[1], weight.grad, atol=1e-6)
    reference = torch.log_softmax(hidden @ weight.T, -1).gather(-1, targets[:, None])[:, 0]
    assert torch.allclose(one["log_probs"], reference, atol=1e-6)

    model, processor = tiny_model("antiberty", projector="mean")
    batch, labels = batch_with_labels(processor)
    add_compact_lm_head(model)
    rows = []
    model.lm_head.register_forward_hook(lambda m, a, o: rows.append(a[0].shape))
    import bioreason.model.lm_head as lm_head

    seen = []
    original = lm_head._rows
    lm_head._rows = lambda h, *a: seen.append(h.shape[0]) or original(h, *a)
    try:
        model(**batch, labels=labels, fused_lm_head=True)
    finally:
        lm_head._rows = original
    assert rows == [] and seen == [int((labels[:, 1:] != -100).sum())]  # not the lm_head module on every position


def test_head_is_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model, processor = tiny_model("antiberty", projector="mean")
    batch, labels = batch_with_labels(processor)
    add_compact_lm_head(model)
    with torch.no_grad():
        exact = model(**batch, labels=labels, fused_lm_head=True).log_probs
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(**batch, labels=labels, fused_lm_head=True).log_probs
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, exact, atol=0.1)  # the backbone in bf16, the head's products in fp32


def sft_step(tmp_path, ours: bool) -> dict[str, torch.Tensor]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from bioreason.training.collator import RecordCollator
    from bioreason.training.sft_trainer import BioSFTTrainer, sft_config_defaults

    torch.manual_seed(0)
    model, processor = tiny_model("antiberty", projector="mean")
    model = apply_lora(model, r=4)
    items = sample_items("antiberty", n=4, seed=2)
    records = Dataset.from_list([
        {"id": str(i), "question": "<protein>\nWhich chain?", "answer": ["heavy", "kappa"][i % 2],
         "label_set": ["heavy", "kappa"], "reasoning": "", "protein": [items[i]], "dna": [], "rna": []}
        for i in range(4)])
    config, _ = sft_config_defaults(SFTConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2, use_cpu=True,
        bf16=False, report_to="none", save_strategy="no", seed=3, logging_steps=1))
    cls = BioSFTTrainer if ours else SFTTrainer
    trainer = cls(model=model, args=config, train_dataset=records, processing_class=processor.tokenizer,
                  data_collator=RecordCollator(processor, use_reasoning=False))
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    return {"loss": torch.tensor([e["loss"] for e in logs]),
            "accuracy": torch.tensor([e["mean_token_accuracy"] for e in logs]),
            **{n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}}


def test_sft_steps_update_weights_as_trl_full_head_does(tmp_path):
    ours, theirs = sft_step(tmp_path / "ours", True), sft_step(tmp_path / "trl", False)
    assert ours.keys() == theirs.keys()
    assert torch.allclose(ours["loss"], theirs["loss"], atol=1e-5)
    assert torch.allclose(ours["accuracy"], theirs["accuracy"])
    for name, value in theirs.items():
        assert torch.allclose(ours[name], value, atol=1e-5), name


def test_grpo_trainer_uses_the_compact_head_on_policy_and_reference(tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig

    from bioreason.training.grpo_trainer import BioGRPOTrainer, grpo_dataset

    torch.manual_seed(0)
    model, processor = tiny_model("antiberty", projector="mean")
    items = sample_items("antiberty", n=2, seed=3)
    records = Dataset.from_list([
        {"id": str(i), "question": "<protein>\nWhich chain?", "answer": "heavy", "label_set": ["heavy", "kappa"],
         "reasoning": "", "protein": [items[i]], "dna": [], "rna": []} for i in range(2)])
    config = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                        max_completion_length=4, max_steps=1, beta=0.1, use_cpu=True, bf16=False, report_to="none",
                        remove_unused_columns=False, save_strategy="no", gradient_checkpointing=False,
                        temperature=0.8)
    trainer = BioGRPOTrainer(model=model, args=config, train_dataset=grpo_dataset(records), processor=processor,
                             reward_funcs=[lambda completions, **kw: [float(len(c)) for c in completions]])
    for module in (trainer.model, trainer.ref_model):
        assert module.forward.__func__.__code__.co_filename.endswith("lm_head.py")
    batch, labels = batch_with_labels(processor)
    with torch.no_grad():
        out = trainer.ref_model(**batch, labels=labels, fused_lm_head=True)
        logits = trainer.ref_model(**batch).logits[:, :-1] / 0.8
    expected = torch.log_softmax(logits, -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
    mask = labels[:, 1:] != -100
    assert torch.allclose(out.log_probs[mask], expected[mask], atol=1e-5)
