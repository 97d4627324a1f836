"""Shared GRPO prompts: prefill-once generation and prefix-once log-prob passes equal the plain paths (tokens,
log-probs, gradients, a whole GRPO step), while the encoder and the prompt run once per unique prompt."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import sample_items, tiny_model
from trl.trainer.utils import add_fused_lm_head

from bioreason.model.rollout import prompt_groups, shared_prefix_logps
from bioreason.training.adaptation import apply_lora

G = 3


def group_batch(processor):
    """Two prompts of different lengths (so one is left-padded), each repeated G times, as TRL batches them."""
    items = [sample_items("esm2", n=1, seed=s)[0] for s in range(2)]
    texts = ["<protein> what is it?"] * G + ["<protein> and this longer one, which chain is it?"] * G
    processor.tokenizer.padding_side = "left"
    return processor(text=texts, protein=[items[0]] * G + [items[1]] * G)


def encoder_rows(model):
    rows = []
    model.model.encoders["protein"].register_forward_hook(lambda m, a, o: rows.append(a[0].shape[0]))
    return rows


def test_prompt_groups_find_repeats_and_respect_modality_items():
    ids = torch.tensor([[1, 2], [1, 2], [1, 2], [3, 4]])
    mask = torch.ones_like(ids)
    values = torch.tensor([[5], [5], [6], [7]])  # rows 0 and 1 share text and item; row 2 has another item
    unique, inverse, mod = prompt_groups(ids, mask, {"protein_values": values})
    assert unique.tolist() == [0, 2, 3] and inverse.tolist() == [0, 0, 1, 2]
    assert mod["protein_values"].tolist() == [[5], [6], [7]]
    assert prompt_groups(ids[2:], mask[2:], {"protein_values": values[2:]}) is None  # nothing shared


def test_shared_prefill_generates_the_same_tokens_with_one_prefill_per_prompt():
    model, processor = tiny_model("esm2", projector="linear")
    model.eval()
    batch = group_batch(processor)
    rows = encoder_rows(model)
    with torch.no_grad():
        plain = model.generate(**batch, max_new_tokens=8, do_sample=False)
        shared = model.generate(**batch, max_new_tokens=8, do_sample=False, share_prompt_prefill=True)
        torch.manual_seed(1)
        plain_s = model.generate(**batch, max_new_tokens=8, do_sample=True, output_scores=True,
                                 return_dict_in_generate=True)
        torch.manual_seed(1)
        shared_s = model.generate(**batch, max_new_tokens=8, do_sample=True, output_scores=True,
                                  return_dict_in_generate=True, share_prompt_prefill=True)
    assert torch.equal(plain, shared)
    assert torch.equal(plain_s.sequences, shared_s.sequences)
    for a, b in zip(plain_s.scores, shared_s.scores, strict=True):
        finite = torch.isfinite(a)
        assert torch.equal(finite, torch.isfinite(b)) and torch.allclose(a[finite], b[finite], atol=1e-4)
    assert rows == [2 * G, 2, 2 * G, 2]  # the shared path encodes (and prefills) 2 prompts, not 2 x G rows


def test_prefill_sharing_is_a_generate_option_not_model_state():
    """The option travels with the call, as an argument or a field of the generation config passed in (how the GRPO
    trainer asks for it through TRL's generate call); the model keeps no attribute for it, and transformers never sees
    the field."""
    from transformers import GenerationConfig

    model, processor = tiny_model("esm2", projector="linear")
    model.eval()
    batch = group_batch(processor)
    rows = encoder_rows(model)
    config = GenerationConfig(max_new_tokens=4, do_sample=False, share_prompt_prefill=True)
    with torch.no_grad():
        shared = model.generate(**batch, generation_config=config)
        plain = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert torch.equal(shared, plain) and rows == [2, 2 * G]
    assert config.share_prompt_prefill is True  # the caller's config is not modified
    assert not hasattr(model, "share_prompt_prefill")


def test_shared_prefix_logps_and_gradients_equal_the_full_pass():
    model, processor = tiny_model("esm2", projector="linear")
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    model = apply_lora(model, r=4)
    model.eval()
    batch = group_batch(processor)
    completions = torch.randint(3, 200, (2 * G, 5))
    completion_mask = torch.ones_like(completions)
    completion_mask[1, 3:] = 0  # a sample that ended early (right padding)
    ids = torch.cat([batch["input_ids"], completions], 1)
    mask = torch.cat([batch["attention_mask"], completion_mask], 1)
    keep = completions.shape[1]
    rows = {k: batch[k].reshape(2 * G, -1, *batch[k].shape[1:]) for k in ("protein_values", "protein_mask")}
    params = [p for p in model.parameters() if p.requires_grad]

    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-keep] = -100
    full = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True,
                 protein_values=batch["protein_values"], protein_mask=batch["protein_mask"])
    full_logps, full_entropy = full.log_probs[:, -keep:], full.entropy[:, -keep:]
    full_grads = torch.autograd.grad((full_logps * completion_mask).sum(), params)

    shared = shared_prefix_logps(model, ids, mask, keep, rows)
    assert shared.log_probs.shape == (2 * G, keep)
    shared_grads = torch.autograd.grad((shared.log_probs * completion_mask).sum(), params)
    valid = completion_mask.bool()
    assert torch.allclose(full_logps[valid], shared.log_probs[valid], atol=1e-5)
    assert torch.allclose(full_entropy[valid], shared.entropy[valid], atol=1e-5)
    for a, b in zip(full_grads, shared_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in shared_grads)


def varied_reward(completions, **_):
    """Differs between samples, so advantages and gradients are non-zero."""
    return [float(len(str(c)) % 3) for c in completions]


def grpo_step(out_dir, share: bool, monkeypatch) -> dict:
    """One GRPO step (G samples of 2 prompts, KL reference on) from a fixed seed; what it logged and saved."""
    from datasets import Dataset
    from safetensors.torch import load_file
    from trl import GRPOConfig

    from bioreason.training import grpo_trainer
    from bioreason.training.arguments import ModelArguments
    from bioreason.training.grpo_trainer import BioGRPOTrainer, grpo_dataset
    from bioreason.training.prepare import enable_feature_cache

    shared_passes = []

    def spy(*args, **kwargs):
        out = shared_prefix_logps(*args, **kwargs)
        shared_passes.append(out is not None)
        return out

    monkeypatch.setattr(grpo_trainer, "shared_prefix_logps", spy)

    torch.manual_seed(0)
    model, processor = tiny_model("antiberty", projector="mean")
    items = sample_items("antiberty", n=2, seed=3)
    records = Dataset.from_list([
        {"id": str(i), "question": "<protein>\nWhich chain? Answer with one of: heavy, kappa.",
         "answer": ["heavy", "kappa"][i], "label_set": ["heavy", "kappa"], "reasoning": "", "protein": [items[i]],
         "dna": [], "rna": []} for i in range(2)])
    enable_feature_cache(model, ModelArguments(feature_cache="memory" if share else "off"))
    rows = encoder_rows(model)
    config = GRPOConfig(output_dir=str(out_dir), per_device_train_batch_size=2 * G, num_generations=G,
                        max_completion_length=6, max_steps=1, learning_rate=1e-2, beta=0.1, use_cpu=True,
                        bf16=False, report_to="none", logging_steps=1, seed=7, remove_unused_columns=False,
                        save_strategy="no", gradient_checkpointing=False,
                        # SGD: the updated weights compare the gradients themselves; Adam's first step divides each
                        # gradient by its own magnitude, so a 1e-9 gradient element turns float noise into 1e-5 moves
                        optim="sgd")
    trainer = BioGRPOTrainer(model=model, args=config, train_dataset=grpo_dataset(records), processor=processor,
                             reward_funcs=[varied_reward], share_prompts=share)
    trainer.train()
    log = next(e for e in trainer.state.log_history if "loss" in e)
    trainer.model.save_pretrained(out_dir / "final")
    return {"loss": log["loss"], "reward": log["reward"], "encoded_rows": sum(rows), "shared_passes": shared_passes,
            "weights": load_file(os.path.join(out_dir / "final", "model.safetensors"))}


def test_grpo_step_is_the_same_with_and_without_sharing(tmp_path, monkeypatch):
    """Same rewards, loss and updated weights either way; with sharing the frozen encoder sees each prompt's item once
    per step instead of once per sample in generation, the policy pass and the reference pass."""
    plain = grpo_step(tmp_path / "plain", share=False, monkeypatch=monkeypatch)
    shared = grpo_step(tmp_path / "shared", share=True, monkeypatch=monkeypatch)
    assert plain["shared_passes"] == [] and shared["shared_passes"] and all(shared["shared_passes"])
    assert plain["loss"] != 0 and shared["reward"] == pytest.approx(plain["reward"])
    assert shared["loss"] == pytest.approx(plain["loss"], abs=1e-5)
    for key, value in plain["weights"].items():
        assert torch.allclose(value, shared["weights"][key], atol=1e-5), key
    assert plain["encoded_rows"] >= 3 * 2 * G and shared["encoded_rows"] == 2
    assert any(not torch.equal(v, shared["weights"][k]) for k, v in initial_weights().items() if k in shared["weights"])


def initial_weights() -> dict:
    torch.manual_seed(0)
    model, _ = tiny_model("antiberty", projector="mean")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_generation_is_not_shared_when_rows_hold_different_numbers_of_items():
    model, processor = tiny_model("esm2", projector="linear")
    model.eval()
    items = [sample_items("esm2", n=1, seed=s)[0] for s in range(3)]
    processor.tokenizer.padding_side = "left"
    batch = processor(text=["<protein> <protein> two?", "<protein> one?", "<protein> one?"],
                      protein=[items[0], items[1], items[2], items[2]])
    rows = encoder_rows(model)
    with torch.no_grad():
        plain = model.generate(**batch, max_new_tokens=4, do_sample=False)
        shared = model.generate(**batch, max_new_tokens=4, do_sample=False, share_prompt_prefill=True)
    assert torch.equal(plain, shared) and rows == [4, 4]  # no prefill of "unique" rows: the plain path ran twice
