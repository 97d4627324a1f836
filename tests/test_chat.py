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
