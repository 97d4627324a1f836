"""`BioGRPOTrainer`: TRL's `GRPOTrainer`, subclassed (not forked) so that the encoders stay in the loop: modality
tensors reach generation and every log-prob pass (policy, old policy, reference). The stage script is
`bioreason.recipes.grpo`.

How the subclass threads the modalities through TRL (which forwards only image inputs):
- `_generate_and_score_completions` keeps the batch's dataset rows; `_tokenize_prompts` renders their chat prompts,
  expands the markers with the BioReason processor and returns the modality tensors as TRL's `multimodal_fields`,
  which TRL passes to `generate` (placeholder tokens are suppressed by `BioReasonForCausalLM.generate`);
- the same tensors, reshaped row-aligned `[B, items, ...]` so TRL can shuffle and split them with the rest of the
  batch, are added to the generation output;
- `_compute_loss` exposes the current rows' tensors to `_get_per_token_logps_and_entropies`, which is overridden to
  pass them to the model's fused-head call, which `bioreason.model.lm_head` answers with the completion tokens only,
  in fp32.

With `share_prompts` (default), a group's G samples share their prompt's work (`bioreason.model.rollout`): generation
prefills each unique prompt once, and every log-prob pass runs the prompt once per unique row and only the completions
per sample. Frozen encoders run once per unique input through the feature cache (`feature_cache`, in ModelArguments).
Rewards are `bioreason.training.rewards.REWARDS` entries; dataset columns (`answer`, `label_set`) reach them as keyword
lists.

Dynamic sampling (`dynamic_sampling` = k > 1, after DAPO): a group whose rewards are all equal has zero advantage and
carries no gradient. Each generation then samples k times the batch's prompts (the batch's own first, then prompts drawn
from the train set by a seeded generator) in one generation pass, and keeps the first groups with advantage. Where
too few have any, the places left are filled by repeating the groups that have it (`repeated_groups`), not with
groups without: under the token-normalised losses a group without advantage adds tokens to the denominator and
nothing to the numerator, so it would only shrink the step, and it would cost a loss pass. Where none of the draw has
advantage, the step is skipped (`skipped_steps`): no loss pass and no backward, so the parameters have no gradient
and the optimizer leaves them (and its moments) alone, where a zero gradient would still move them by Adam's
momentum. The skip needs `beta` = 0 (with a KL term a group without advantage still has a gradient) and one process.
The logged `frac_reward_zero_std` covers every group drawn, so `StopWhenSolved` (`stop_when_solved: N`) ends the
stage after N batches in which none of the k-fold draw had advantage and every rollout was right. The draw generator's
state and the counts go into each checkpoint next to the RNG states Trainer saves (`dynamic_sampling.json`, plain
JSON), so a resumed stage draws the prompts the uninterrupted one would have and its counts cover the whole stage.
"""

from __future__ import annotations

import copy
import json
import os

import torch
from trl import GRPOTrainer
from trl.trainer.utils import disable_dropout_in_model

from bioreason.data.chat import modality_inputs, to_messages
from bioreason.model.lm_head import add_compact_lm_head
from bioreason.model.modeling_bioreason import MODALITY_KWARGS
from bioreason.model.rollout import shared_prefix_logps
from bioreason.training.mixins import AtomicCheckpointMixin, ProjectorLearningRateMixin
from bioreason.training.prepare import base_model, release_from_trainer

# The private GRPOTrainer methods the subclass overrides, with the parameters it relies on. TRL has no public hook for
# inputs other than images (prompt tokenisation and the log-prob pass take image kwargs only; `rollout_func`, marked
# experimental, would replace generation alone and leave the log-prob passes without the sequences), so these
# overrides are the seam; `check_trl_contract` turns a TRL release that renames one into an error naming it, not a
# silent fallback to TRL's version (which would train the LLM on prompts without their sequences).
TRL_CONTRACT: dict[str, tuple[str, ...]] = {
    "_generate_and_score_completions": ("self", "inputs"),
    "_tokenize_prompts": ("self", "prompts"),
    "_compute_loss": ("self", "model", "inputs"),
    "_get_per_token_logps_and_entropies": ("self", "model", "input_ids", "attention_mask", "logits_to_keep",
                                           "batch_size", "compute_entropy", "compute_aux_loss"),
    # transformers' Trainer, inherited: where dynamic sampling's draw state joins the checkpoint's RNG states
    "_save_rng_state": ("self", "output_dir"),
    "_load_rng_state": ("self", "checkpoint"),
}


def check_trl_contract(trainer_class: type = GRPOTrainer) -> None:
    """Raise `RuntimeError` naming the method if TRL's `GRPOTrainer` lacks one we override or its leading parameters
    changed (tested on trl 1.16; pyproject pins `trl>=1.16,<1.17`)."""
    import inspect

    import trl

    for name, expected in TRL_CONTRACT.items():
        method = getattr(trainer_class, name, None)
        if method is None:
            raise RuntimeError(f"trl {trl.__version__}: GRPOTrainer.{name} no longer exists; BioGRPOTrainer overrides "
                               f"it (tested with trl 1.16): pin trl>=1.16,<1.17")
        params = tuple(inspect.signature(method).parameters)[: len(expected)]
        if params != expected:
            raise RuntimeError(f"trl {trl.__version__}: GRPOTrainer.{name} takes {params}, BioGRPOTrainer expects "
                               f"{expected} (tested with trl 1.16): pin trl>=1.16,<1.17")


class BioGRPOTrainer(AtomicCheckpointMixin, ProjectorLearningRateMixin, GRPOTrainer):
    def __init__(self, *args, processor, cells=None, share_prompts: bool = True, dynamic_sampling: int = 0, **kwargs):
        check_trl_contract(GRPOTrainer)
        self.bio_processor = processor
        self.share_prompts = share_prompts
        self.dynamic_sampling = int(dynamic_sampling)
        # what dynamic sampling did, over the stage: groups generated, with advantage, dropped, batch places filled
        # by repeating a group with advantage, and steps skipped because no group drawn had any
        self.sampling_record = {"groups_generated": 0, "groups_with_advantage": 0, "groups_dropped": 0,
                                "repeated_groups": 0, "skipped_steps": 0}
        self.cells = cells
        self._rows: list[dict] | None = None  # dataset rows of the batch being generated
        self._modality_rows: dict[str, torch.Tensor] | None = None  # row-aligned tensors for the log-prob passes
        model, config = kwargs["model"], kwargs["args"]
        release_from_trainer(model)  # before the reference copy: neither may carry an earlier trainer's marks
        reference, beta = None, config.beta
        if beta != 0 and not hasattr(model, "peft_config"):
            # TRL would rebuild the KL reference from the model's path by transformers class name, which a registered
            # custom class (or a model composed in memory) does not have: copy the policy instead, and let TRL's
            # init run as for beta = 0.
            reference = copy.deepcopy(model).eval().requires_grad_(False)
            config.beta = 0.0
        super().__init__(*args, processing_class=processor.tokenizer, **kwargs)
        # the LM head only on completion tokens, in fp32, for the policy and the reference (bioreason.model.lm_head)
        add_compact_lm_head(base_model(self.model), temperature=self.temperature, outputs=("log_probs", "entropy"))
        if self.ref_model is not None:
            add_compact_lm_head(self.ref_model, temperature=self.temperature)
        if reference is not None:
            self.args.beta = self.beta = beta
            if self.args.disable_dropout:
                disable_dropout_in_model(reference)
            add_compact_lm_head(reference, temperature=self.temperature)
            self.ref_model = self.accelerator.prepare_model(reference, evaluation_mode=True)
        if self.dynamic_sampling > 1 and self.accelerator.num_processes > 1:
            raise ValueError("dynamic_sampling draws and selects groups within one process; with "
                             f"{self.accelerator.num_processes} processes a group's samples are split across them: "
                             "set dynamic_sampling: 0")
        self._draws = torch.Generator().manual_seed(int(self.args.seed))
        if getattr(self, "generation_config", None) is not None:  # (vLLM generates elsewhere and has none)
            # TRL passes this generation config to every `generate` call; the model reads the option from it
            self.generation_config.share_prompt_prefill = share_prompts

    # Checkpoints ----------------------------------------------------------------------------------------------------
    DRAWS_FILE = "dynamic_sampling.json"

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        if self.dynamic_sampling > 1 and self.args.should_save:
            state = {"generator": self._draws.get_state().tolist(), "record": self.sampling_record}
            with open(os.path.join(output_dir, self.DRAWS_FILE), "w", encoding="utf-8") as fh:
                json.dump(state, fh)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)
        path = os.path.join(checkpoint, self.DRAWS_FILE) if checkpoint else None
        if self.dynamic_sampling <= 1 or path is None:
            return
        if not os.path.isfile(path):  # a checkpoint written without dynamic sampling, or before its state was saved
            raise FileNotFoundError(f"{checkpoint}: no {self.DRAWS_FILE}; this stage samples dynamically and cannot "
                                    "resume it with the prompts it would have drawn: start the stage again "
                                    "(resume=false) or resume with the dynamic_sampling it was started with")
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
        self._draws.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.sampling_record.update(state["record"])

    # Generation ------------------------------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        if self.dynamic_sampling <= 1 or not self.model.training:
            return self._generate_rows(inputs)
        groups = len(inputs) // self.num_generations
        extra = [dict(self.train_dataset[int(i)]) for i in
                 torch.randint(len(self.train_dataset), ((self.dynamic_sampling - 1) * groups,), generator=self._draws)]
        drawn = list(inputs) + [row for row in extra for _ in range(self.num_generations)]
        output = self._generate_rows(drawn)
        return self._keep_groups_with_advantage(output, len(drawn), groups)

    def _keep_groups_with_advantage(self, output: dict, rows: int, groups: int) -> dict:
        """The first `groups` groups of `output` whose advantages are not all zero; if too few, those groups again in
        turn (never a group without advantage, unless no group has any: then the first `groups`, a batch the step
        skips). Every per-row tensor is indexed alike; the token count the loss divides by is recounted over the kept
        rows, repeats included, so a repeated group weighs as two."""
        g = self.num_generations
        has_advantage = (output["advantages"].view(-1, g) != 0).any(-1).tolist()
        chosen = [i for i, a in enumerate(has_advantage) if a][:groups]
        repeated = groups - len(chosen) if chosen else 0
        chosen = [chosen[k % len(chosen)] for k in range(groups)] if chosen else list(range(groups))
        record = self.sampling_record
        record["groups_generated"] += len(has_advantage)
        record["groups_with_advantage"] += sum(has_advantage)
        record["groups_dropped"] += len(has_advantage) - groups
        record["repeated_groups"] += repeated
        self._metrics["train"]["dynamic_sampling/groups_with_advantage"].append(sum(has_advantage) / len(has_advantage))
        self._metrics["train"]["dynamic_sampling/repeated_groups"].append(float(repeated))
        index = torch.tensor([i * g + j for i in sorted(chosen) for j in range(g)])
        kept = {}
        for key, value in output.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows:
                kept[key] = value[index.to(value.device)]
            else:
                kept[key] = value
        mask = kept["completion_mask"] if kept.get("tool_mask") is None else kept["completion_mask"] * kept["tool_mask"]
        kept["num_items_in_batch"] = mask.sum()
        return kept

    # Loss ------------------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss, except for a batch without any advantage under dynamic sampling: no loss pass, and a loss
        that reaches no parameter, so after `backward` their gradients stay `None` and the optimizer skips them."""
        if (self.dynamic_sampling > 1 and self.beta == 0.0 and self.accelerator.num_processes == 1
                and not return_outputs and bool((inputs["advantages"] == 0).all())):
            self.sampling_record["skipped_steps"] += 1
            self._metrics["train"]["dynamic_sampling/skipped_steps"].append(1.0)
            return torch.zeros((), device=inputs["advantages"].device, requires_grad=True)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _generate_rows(self, inputs):
        self._rows = inputs
        try:
            output = super()._generate_and_score_completions(inputs)
            output.update(self._modality_rows or {})
            return output
        finally:
            self._rows, self._modality_rows = None, None

    def _tokenize_prompts(self, prompts: list):
        # the batch's dataset rows come from `_generate_and_score_completions`, which TRL calls around this method:
        # refuse to guess if TRL's call order changes (the contract `check_trl_contract` pins)
        if self._rows is None or len(self._rows) != len(prompts):
            raise RuntimeError(f"_tokenize_prompts got {len(prompts)} prompts with "
                               f"{'no dataset rows' if self._rows is None else f'{len(self._rows)} dataset rows'}: "
                               "TRL no longer calls it inside _generate_and_score_completions (see TRL_CONTRACT)")
        texts = [self.processing_class.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        items: dict[str, list] = {}
        counts: dict[str, set[int]] = {}
        for row in self._rows:
            for modality, values in modality_inputs(row, self.cells).items():
                items.setdefault(modality, []).extend(values)
                counts.setdefault(modality, set()).add(len(values))
        if any(len(c) > 1 for c in counts.values()):
            raise ValueError("GRPO batches need the same number of inputs per modality in every prompt")
        expanded, data = self.bio_processor.prepare(texts, **items)
        prompt_ids = self.processing_class(expanded, add_special_tokens=False)["input_ids"]
        n = len(texts)
        self._modality_rows = {k: v.reshape(n, -1, *v.shape[1:]).to(self.accelerator.device) for k, v in data.items()}
        return prompt_ids, None, data

    # Log-probs -------------------------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        self._modality_rows = {k: v for k, v in inputs.items() if k in MODALITY_KWARGS}
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._modality_rows = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **image_inputs):
        rows = self._modality_rows or {}
        for key, value in rows.items():  # rows set by `_compute_loss` / generation must be this batch's, row for row
            if value.shape[0] != input_ids.size(0):
                raise RuntimeError(f"{key} holds {value.shape[0]} rows for {input_ids.size(0)} sequences: the "
                                   "modality rows are not this batch's (see TRL_CONTRACT)")
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            model_inputs = {"input_ids": input_ids[start:end], "attention_mask": attention_mask[start:end]}
            for key, value in rows.items():  # [rows, items, ...] -> the flat item batch the model takes
                model_inputs[key] = value[start:end].flatten(0, 1)
            outputs = None
            with self.accelerator.autocast():
                if self.share_prompts and not self.args.gradient_checkpointing:  # (checkpointing drops the KV cache)
                    outputs = shared_prefix_logps(model, model_inputs["input_ids"], model_inputs["attention_mask"],
                                                  logits_to_keep, {k: v[start:end] for k, v in rows.items()})
                if outputs is None:
                    labels = model_inputs["input_ids"].masked_fill(model_inputs["attention_mask"] == 0, -100)
                    labels[:, :-logits_to_keep] = -100
                    outputs = model(**model_inputs, labels=labels, fused_lm_head=True)
            logps.append(outputs.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                entropies.append(outputs.entropy[:, -logits_to_keep:])
        return torch.cat(logps), (torch.cat(entropies) if compute_entropy else None), None


def grpo_dataset(records):
    """Dataset rows with a conversational `prompt` (system + user) next to the record columns rewards read."""
    return records.map(lambda r: {"prompt": to_messages(r, with_answer=False)})


__all__ = ["TRL_CONTRACT", "BioGRPOTrainer", "check_trl_contract", "grpo_dataset"]
