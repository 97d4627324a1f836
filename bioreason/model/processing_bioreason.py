"""`BioReasonProcessor`: the LLM tokenizer plus one featurizer per modality.

`processor(text="... <protein> ...", protein=["MKT..."])` featurizes every item, asks the projector spec how many LLM
tokens the item becomes (N), and rewrites the i-th `<protein>` marker into `<|protein_start|>` + `<|protein_pad|>` x N
+ `<|protein_end|>` before tokenizing. Items of a modality are given as one flat list, in the order their markers
appear across the batch (as transformers' image processors take images). The model later fills the pad positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchFeature, ProcessorMixin

from bioreason.encoders.base import Featurizer, build_featurizer
from bioreason.model.configuration_bioreason import MODALITIES
from bioreason.projectors.base import num_output_tokens


class BioReasonProcessor(ProcessorMixin):
    """Args:
    tokenizer: the LLM's tokenizer, with the placeholder tokens already added (see `bioreason.model.composition`).
    modalities: `{modality: {"featurizer": spec, "projector": spec, "marker", "start_token", "pad_token",
        "end_token"}}`, saved as JSON in `processor_config.json`.
    task: what a trained model was trained to answer, `{"system_prompt", "question", "label_set",
        "answer_format"}` (None for a model that was only composed), saved in `processor_config.json`. The prompt
        travels with the model: without it a user had to find the training format (system prompt, question, marker
        first) in the source, and with the LLM's own default system prompt the model answered noise.
    """

    def __init__(self, tokenizer: Any = None, modalities: dict | None = None, chat_template: str | None = None,
                 task: dict | None = None, **kwargs: Any):
        self.modalities = modalities or {}
        self.task = task
        self._featurizers: dict[str, Featurizer] = {}
        super().__init__(tokenizer, chat_template=chat_template)

    def apply_chat_template(self, conversation: Any, chat_template: str | None = None, **kwargs: Any) -> Any:
        """transformers' `apply_chat_template`, with the trained task's system prompt first where the conversation
        has no system message, so that a user message alone is formatted as training formatted it."""
        system = (self.task or {}).get("system_prompt")
        if system:
            def with_system(messages):
                if messages and isinstance(messages[0], dict) and messages[0].get("role") != "system":
                    return [{"role": "system", "content": system}, *messages]
                return messages

            batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
            conversation = [with_system(list(c)) for c in conversation] if batched else with_system(
                list(conversation))
        return super().apply_chat_template(conversation, chat_template=chat_template, **kwargs)

    def task_prompt(self, question: str | None = None) -> str:
        """The text to pass as `text=` for one question, formatted as in training (system prompt, chat template,
        generation prompt); `question` defaults to the task's own."""
        question = question if question is not None else (self.task or {}).get("question")
        if not question:
            raise ValueError("this model has no saved task question (it was composed, not trained on a task): give "
                             "a question")
        return self.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                        add_generation_prompt=True)

    @property
    def model_input_names(self) -> list[str]:
        names = ["input_ids", "attention_mask"]
        for modality in self.modalities:
            names += [f"{modality}_values", f"{modality}_mask"]
        return names

    def featurizer(self, modality: str) -> Featurizer:
        if modality not in self._featurizers:
            self._featurizers[modality] = build_featurizer(self.modalities[modality]["featurizer"])
        return self._featurizers[modality]

    def featurize(self, modality: str, items: Sequence[Any]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Tensors for the model and the number of placeholder tokens each item needs."""
        spec = self.modalities[modality]
        featurizer = self.featurizer(modality)
        tensors = featurizer(list(items))
        lengths = featurizer.output_lengths(tensors["mask"])
        return tensors, [num_output_tokens(spec["projector"], n) for n in lengths]

    def expand_markers(self, texts: list[str], modality: str, counts: list[int]) -> list[str]:
        spec = self.modalities[modality]
        pieces = iter(spec["start_token"] + spec["pad_token"] * n + spec["end_token"] for n in counts)
        out = []
        for text in texts:
            parts = text.split(spec["marker"])
            rebuilt = parts[0]
            for part in parts[1:]:
                rebuilt += next(pieces) + part
            out.append(rebuilt)
        return out

    def prepare(self, texts: list[str], dna: Sequence[Any] | None = None, rna: Sequence[Any] | None = None,
                protein: Sequence[Any] | None = None) -> tuple[list[str], dict[str, torch.Tensor]]:
        """Check markers against inputs, featurize, and expand the markers; returns the expanded texts and the
        modality tensors. `__call__` tokenizes the result; collators that need character offsets use this."""
        given = {"dna": dna, "rna": rna, "protein": protein}
        data: dict[str, torch.Tensor] = {}
        for modality in MODALITIES:
            items = given[modality]
            if items is not None and (isinstance(items, str) or not isinstance(items, Sequence)):
                items = [items]
            markers = sum(t.count(f"<{modality}>") for t in texts)
            if modality not in self.modalities:
                if items or markers:
                    raise ValueError(
                        f"{modality} input or <{modality}> marker given, but this model has no {modality} encoder; "
                        f"it handles {sorted(self.modalities)}"
                    )
                continue
            n_items = len(items) if items is not None else 0
            if n_items and not markers:
                raise ValueError(f"{n_items} {modality} inputs were given but the text has no <{modality}> marker")
            if markers != n_items:
                raise ValueError(
                    f"the text has {markers} <{modality}> markers but {n_items} {modality} inputs were given"
                )
            if not n_items:
                continue
            tensors, counts = self.featurize(modality, items)
            texts = self.expand_markers(texts, modality, counts)
            data[f"{modality}_values"] = tensors["values"]
            data[f"{modality}_mask"] = tensors["mask"]
        return texts, data

    def __call__(
        self,
        text: str | list[str] | None = None,
        dna: Sequence[Any] | None = None,
        rna: Sequence[Any] | None = None,
        protein: Sequence[Any] | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        **kwargs: Any,
    ) -> BatchFeature:
        if text is None:
            raise ValueError("text is required: it carries one marker (e.g. <protein>) per modality input")
        texts, data = self.prepare([text] if isinstance(text, str) else list(text), dna=dna, rna=rna, protein=protein)
        encoded = self.tokenizer(texts, padding=padding, return_tensors=return_tensors, **kwargs)
        data = {**encoded, **data}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)


__all__ = ["BioReasonProcessor"]
