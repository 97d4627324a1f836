"""The chat format and the one answer parser shared by SFT, rewards and evaluation."""

from __future__ import annotations

import pytest

from bioreason.data import SYSTEM_PROMPT, format_completion, modality_inputs, normalize_label, parse_answer, to_messages


def test_format_then_parse_round_trips():
    text = format_completion("kappa", "Two cysteines at 23 and 88.")
    parsed = parse_answer(text)
    assert parsed == parse_answer(text) and parsed.well_formed
    assert parsed.answer == "kappa" and parsed.think == "Two cysteines at 23 and 88."


@pytest.mark.parametrize(
    ("text", "answer", "well_formed"),
    [
        ("<think>x</think><answer> heavy </answer>", "heavy", True),
        ("<think>x</think>\n<answer>heavy</answer>\n", "heavy", True),
        ("<answer>heavy</answer>", "heavy", False),  # no reasoning block
        ("<think>x</think><answer>heavy</answer> actually lambda", "heavy", False),  # text after the answer
        ("<think>x</think><answer>heavy</answer><answer>kappa</answer>", None, False),  # two answers
        ("<think>x</think> heavy", None, False),  # answer outside the tags
        ("<answer>heavy</answer><think>x</think>", "heavy", False),  # wrong order
        ("", None, False),
    ],
)
def test_parse_answer_is_strict_about_structure(text, answer, well_formed):
    parsed = parse_answer(text)
    assert parsed.answer == answer and parsed.well_formed is well_formed


def test_messages_and_inputs_from_a_record():
    record = {"question": "<dna>\nWhich class?", "answer": "bZIP", "reasoning": "TGACGTCA site.", "dna": ["ACGT"],
              "rna": [], "protein": []}
    messages = to_messages(record)
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[0]["content"] == SYSTEM_PROMPT and messages[1]["content"] == record["question"]
    assert parse_answer(messages[2]["content"]).answer == "bZIP"
    assert len(to_messages(record, with_answer=False)) == 2
    assert modality_inputs(record) == {"dna": ["ACGT"]}


def test_normalize_label():
    assert normalize_label("  C2H2   Zinc finger. ") == "c2h2 zinc finger"


def test_a_trained_model_carries_its_task_and_asks_as_training_did(tmp_path):
    """The task (system prompt, question, label set) saved with the processor: `task_prompt()` and a user message
    alone through `apply_chat_template` give exactly the prompt evaluation and training format from the record;
    without the task the LLM's own default system prompt came in and the model answered noise."""
    from conftest import tiny_model
    from transformers import AutoProcessor

    from bioreason.data.benchmarks import build_benchmark
    from bioreason.data.chat import task_spec
    from bioreason.evaluation.scoring import prompt_text
    from bioreason.training.arguments import DataArguments
    from bioreason.training.task import load_task

    build_benchmark("antibody_chain", str(tmp_path / "data"))
    dataset, _ = load_task(DataArguments(dataset=str(tmp_path / "data")))
    record = dataset["id_test"][0]
    task = task_spec(dataset)
    assert task["question"] == record["question"] and task["label_set"] == ["heavy", "kappa", "lambda"]
    assert task["system_prompt"] == SYSTEM_PROMPT
    _, processor = tiny_model("antiberty", projector="mean")
    assert processor.task is None
    with pytest.raises(ValueError, match="no saved task question"):
        processor.task_prompt()
    processor.task = task
    processor.save_pretrained(tmp_path / "model")
    loaded = AutoProcessor.from_pretrained(tmp_path / "model")
    assert loaded.task == task
    trained_format = prompt_text(loaded, record)
    assert loaded.task_prompt() == trained_format
    assert loaded.apply_chat_template([{"role": "user", "content": record["question"]}], tokenize=False,
                                      add_generation_prompt=True) == trained_format
    other = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <protein>"}]
    assert loaded.apply_chat_template(other, tokenize=False).count("Be brief.") == 1  # a given system prompt stays
    assert SYSTEM_PROMPT not in loaded.apply_chat_template(other, tokenize=False)
