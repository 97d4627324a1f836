"""Records -> chat messages, and the one answer parser that SFT formatting, rewards and evaluation share.

Completions are `<think>...</think>` followed by `<answer>...</answer>`. `parse_answer` is strict about structure
(exactly one answer block, nothing but whitespace after it) so a reward cannot be earned by an answer outside the
tags, and lenient about whitespace and case inside them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You are a biology assistant that reads DNA, RNA expression and protein inputs. Think step by step inside "
    "<think></think>, then give only the final answer inside <answer></answer>."
)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class ParsedAnswer:
    think: str | None
    answer: str | None
    well_formed: bool  # think block, then exactly one answer block, nothing after it


def format_completion(answer: str, reasoning: str | None = None) -> str:
    return f"<think>\n{(reasoning or '').strip()}\n</think>\n<answer>{answer}</answer>"


def parse_answer(text: str) -> ParsedAnswer:
    answers = _ANSWER.findall(text)
    thinks = _THINK.findall(text)
    answer = answers[0].strip() if len(answers) == 1 else None
    think = thinks[0].strip() if len(thinks) == 1 else None
    well_formed = (
        answer is not None
        and think is not None
        and text.find("<think>") < text.find("</think>") <= text.find("<answer>")
        and not text[text.rfind("</answer>") + len("</answer>"):].strip()
    )
    return ParsedAnswer(think=think, answer=answer, well_formed=well_formed)


def normalize_label(text: str) -> str:
    return " ".join(text.strip().strip(".").lower().split())


def to_messages(record: dict, with_answer: bool = True, system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    """System / user (the question, whose modality markers the processor expands) / assistant (the completion)."""
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": record["question"]}]
    if with_answer:
        messages.append({"role": "assistant",
                         "content": format_completion(record["answer"], record.get("reasoning"))})
    return messages


ANSWER_FORMAT = "<think>\n...\n</think>\n<answer>LABEL</answer>"


def task_spec(dataset) -> dict:
    """What a model trained on `dataset` (a DatasetDict, or one split) answers, for its processor
    (`BioReasonProcessor.task`): the system prompt, the question when every training record asks the same one
    (a template's rendering), the closed label set and the answer format."""
    split = dataset["train"] if "train" in getattr(dataset, "keys", lambda: ())() else dataset
    questions = sorted(set(split["question"])) if len(split) else []
    label_sets = split["label_set"] if "label_set" in split.column_names and len(split) else [[]]
    return {"system_prompt": SYSTEM_PROMPT, "question": questions[0] if len(questions) == 1 else None,
            "label_set": list(label_sets[0]), "answer_format": ANSWER_FORMAT}


def modality_inputs(record: dict, cells=None) -> dict[str, list]:
    """The record's non-empty modality inputs, keyed as the processor takes them; rna cell ids become one-row
    AnnData items when the task's `cells` AnnData is given."""
    items = {m: list(record[m]) for m in ("dna", "rna", "protein") if record.get(m)}
    if "rna" in items and cells is not None:
        items["rna"] = [cells[ref] for ref in items["rna"]]
    return items
