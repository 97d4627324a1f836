"""Batches for supervised training: task records -> chat text -> processor -> `labels` on the assistant turn only.

The loss mask comes from character offsets: markers expand only in the user turn, so the assistant turn starts at
`len(prompt) + (len(expanded full) - len(full))` in the expanded text, and every token starting before that is masked.
This needs no `{% generation %}` markers in the chat template (SmolLM2's has none).

Packing (`packing=True`) concatenates the batch into one row whose `position_ids` restart at 0 for every example and
drops the attention mask: transformers then builds a block-diagonal mask from the position ids (sdpa / eager on CPU,
flash-attention varlen on GPU), so packed examples never attend to each other. transformers reads packing from the
position ids only when there is no KV cache: trainers pass `use_cache=False`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bioreason.data.chat import SYSTEM_PROMPT, format_completion, modality_inputs

TARGETS = ("answer", "describe", "describe_other")


@dataclass
class RecordCollator:
    processor: Any
    cells: Any = None  # the task's cells AnnData, for rna records
    use_reasoning: bool = True
    packing: bool = False
    max_length: int | None = None
    system_prompt: str = SYSTEM_PROMPT
    # "answer": <think>reasoning</think><answer>label</answer>; "describe": the reasoning text (projector alignment);
    # "describe_other": each input paired with the next record's description in its batch, the content control of
    # alignment (the same texts and steps, the pairing broken: what alignment gains from the descriptions' content)
    target: str = "answer"

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"collator target {self.target!r}; one of {', '.join(TARGETS)}")

    def messages(self, record: dict, description: str | None = None) -> tuple[list[dict], str]:
        if self.target in ("describe", "describe_other"):  # projector alignment: sequence -> description
            question = record["question"].split("\n", 1)[0] + "\nDescribe this input."
            return [{"role": "user", "content": question}], record["reasoning"] if description is None else description
        reasoning = record.get("reasoning") if self.use_reasoning else ""
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": record["question"]}]
        return messages, format_completion(record["answer"], reasoning)

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        template = self.processor.tokenizer.apply_chat_template
        prompts, fulls, items = [], [], {}
        others = [None] * len(records)
        if self.target == "describe_other":  # a rotation: no input keeps its own description once the batch has two
            others = [r["reasoning"] for r in records[1:] + records[:1]]
        for record, other in zip(records, others, strict=True):
            messages, completion = self.messages(record, other)
            prompt = template(messages, tokenize=False, add_generation_prompt=True)
            full = template([*messages, {"role": "assistant", "content": completion}], tokenize=False)
            if not full.startswith(prompt):
                raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
            prompts.append(prompt)
            fulls.append(full)
            for modality, values in modality_inputs(record, self.cells).items():
                items.setdefault(modality, []).extend(values)
        expanded, data = self.processor.prepare(fulls, **items)
        starts = [len(p) + len(e) - len(f) for p, e, f in zip(prompts, expanded, fulls, strict=True)]
        enc = self.processor.tokenizer(expanded, return_offsets_mapping=True, add_special_tokens=False)
        rows, labels = [], []
        for ids, offsets, start in zip(enc["input_ids"], enc["offset_mapping"], starts, strict=True):
            if self.max_length is not None and len(ids) > self.max_length:
                raise ValueError(f"an example is {len(ids)} tokens long, over max_length={self.max_length}")
            rows.append(ids)
            labels.append([tok if off[0] >= start else -100 for tok, off in zip(ids, offsets, strict=True)])
        if self.packing:
            batch = {
                "input_ids": torch.tensor([sum(rows, [])]),
                "labels": torch.tensor([sum(labels, [])]),
                "position_ids": torch.tensor([[i for row in rows for i in range(len(row))]]),
            }
        else:
            width = max(len(r) for r in rows)
            pad = self.processor.tokenizer.pad_token_id
            batch = {
                "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
                "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
                "labels": torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels]),
            }
        return {**batch, **data}
