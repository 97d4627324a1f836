"""The SFT collator: loss on the assistant turn only, and packing equal to padding."""

from __future__ import annotations

import torch
from conftest import tiny_model

from bioreason.training.collator import RecordCollator

RECORDS = [
    {"id": "a", "question": "<protein>\nWhich chain? Answer with one of: heavy, kappa.", "answer": "heavy",
     "reasoning": "Starts with EVQL.", "label_set": ["heavy", "kappa"], "protein": ["EVQLVESGGGLV"], "dna": [],
     "rna": []},
    {"id": "b", "question": "<protein>\nWhich chain? Answer with one of: heavy, kappa.", "answer": "kappa",
     "reasoning": "Starts with DIQM.", "label_set": ["heavy", "kappa"], "protein": ["DIQMTQSP"], "dna": [], "rna": []},
]


def test_labels_cover_exactly_the_assistant_turn():
    _, processor = tiny_model("esm2", projector="linear")
    batch = RecordCollator(processor)(RECORDS)
    tok = processor.tokenizer
    for row in range(2):
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        text = tok.decode(labelled)
        assert text.startswith("<think>") and RECORDS[row]["answer"] in text and text.rstrip().endswith("<|im_end|>")
        assert "Which chain" not in text
        pad = processor.modalities["protein"]["pad_token"]
        assert pad not in text  # placeholders are never trained on
    assert batch["protein_values"].shape[0] == 2


def test_packed_batch_gives_the_same_loss_as_the_padded_one():
    model, processor = tiny_model("esm2", projector="linear", attn_implementation="sdpa")
    model.eval()
    padded = RecordCollator(processor)(RECORDS)
    packed = RecordCollator(processor, packing=True)(RECORDS)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert (packed["labels"] != -100).sum() == (padded["labels"] != -100).sum()
    with torch.no_grad():  # use_cache=False as in training: transformers reads packing only without a cache
        loss_padded = model(**padded, use_cache=False).loss
        loss_packed = model(**packed, use_cache=False).loss
        # and no cross-contamination: the second example's logits do not depend on the first one
        alone = RecordCollator(processor, packing=True)(RECORDS[1:])
        tail = model(**packed, use_cache=False).logits[0, -alone["input_ids"].shape[1]:]
        assert torch.allclose(tail, model(**alone, use_cache=False).logits[0], atol=1e-5)
    assert torch.allclose(loss_padded, loss_packed, atol=1e-5)


def test_packed_attention_equals_the_block_diagonal_mask_and_is_not_saved(tmp_path):
    from bioreason.model.packed_attention import NAME, use_packed_attention

    model, processor = tiny_model("esm2", projector="linear", attn_implementation="sdpa")
    model.eval()
    packed = RecordCollator(processor, packing=True)(RECORDS)
    padded = RecordCollator(processor)(RECORDS)
    with torch.no_grad():
        masked = model(**packed, use_cache=False)
        assert use_packed_attention(model)
        assert model.model.language_model.config._attn_implementation == NAME
        segmented = model(**packed, use_cache=False)
        padded_loss = model(**padded, use_cache=False).loss  # not packed: the plain sdpa path
    assert torch.allclose(masked.logits, segmented.logits, atol=1e-5)
    assert torch.allclose(segmented.loss, padded_loss, atol=1e-5)
    model.save_pretrained(tmp_path)
    assert NAME not in (tmp_path / "config.json").read_text()


def test_the_alignment_control_pairs_each_input_with_another_records_description():
    """CPT's content control (`descriptions: other`): the same inputs and the same description texts, each input
    trained towards a description that is not its own; `describe` keeps each input's own."""
    import pytest

    _, processor = tiny_model("esm2", projector="linear")
    tok = processor.tokenizer

    def targets(batch):
        return [tok.decode(row[row != -100]) for row in batch["labels"]]

    own = RecordCollator(processor, target="describe")(RECORDS)
    other = RecordCollator(processor, target="describe_other")(RECORDS)
    assert [t.startswith(r["reasoning"]) for t, r in zip(targets(own), RECORDS, strict=True)] == [True, True]
    assert [t.startswith(r["reasoning"]) for t, r in zip(targets(other), RECORDS[::-1], strict=True)] == [True, True]
    assert torch.equal(own["protein_values"], other["protein_values"])  # the inputs stay where they were
    with pytest.raises(ValueError, match="describe_others"):
        RecordCollator(processor, target="describe_others")
