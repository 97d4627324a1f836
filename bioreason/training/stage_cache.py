"""Finished stages shared between pipeline runs whose configs agree up to that stage.

Why: a study's SFT-rank x RL-rank grid (and every `rl_start` or RL-budget axis) trains the same SFT once per RL
setting. Each stage starts from the seed (`bioreason.recipes.pipeline`), so the model after a stage depends only on
the settings of that stage and the ones before it; the second run can load it instead of training it again, which
halves a CPU study's SFT time. An entry is keyed by a hash of exactly those settings (`prefix_key`) and holds what the
stage changed, not the model: its LoRA adapter (with the modules PEFT trains in full, the projector) and any other
parameter it trained, and the stage's record; `record.json` is written last, so an entry without it is not served. A
run that reaches the stage holds the model the stage started from (the same settings before it, hence the same
weights), applies the entry and merges as the training run did, and gets that run's merged weights bitwise: 34.5 MB
for the quickstart's SFT instead of a 658.5 MB merged model (`docs/measurements/stage_cache/`). An exclusive
`flock` per entry makes a second run wait for the first one's training instead of repeating it; the OS releases it
however a process ends. A run stores every stage but its last (no later stage of another run starts from it), and
`bioreason study run` removes the folder once every run has finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

from bioreason.evaluation.scoring import SCORING_VERSION

FORMAT = "bioreason-stage-cache/2"  # /2: entries hold the stage's changes, not a merged model


def prefix_key(key: dict, stages: list[str], stage: str, sections: dict, budgets: dict) -> dict:
    """What the model after `stage` depends on: the run's config key (`run_state.config_key`) without the sections,
    budgets and stage list of the stages after it, with the resolved sections and budgets of this one and those
    before it (so a default spelled out and one left out agree), and the scoring version: an entry holds the stage's
    scores too, and a study resumed across a change to how stages are scored must not mix the two."""
    done = stages[: stages.index(stage) + 1]
    later_only = {"cpt", "sft", "grpo", "stages", "total_examples", "rl_fraction", "sft_examples", "rl_examples",
                  "cpt_examples", "evaluate_base"}
    pipeline = {k: v for k, v in key["pipeline"].items() if k not in later_only}
    pipeline.update(stages=done, sections={s: sections[s] for s in done}, budgets={s: budgets[s] for s in done})
    prefix = {**key, "pipeline": pipeline, "format": FORMAT, "scoring": SCORING_VERSION}
    return json.loads(json.dumps(prefix, sort_keys=True, default=str))


class StageCache:
    """A folder of finished stages: `<stage>-<hash>/model/` (a merged BioReason folder) and `record.json`."""

    def __init__(self, root: str):
        self.root = root

    def entry(self, stage: str, key: dict) -> str:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return os.path.join(self.root, f"{stage}-{digest}")

    @contextlib.contextmanager
    def hold(self, stage: str, key: dict) -> Iterator[StageEntry]:
        """The entry of `stage` under `key`, locked while the caller reads or fills it."""
        import fcntl

        path = self.entry(stage, key)
        os.makedirs(self.root, exist_ok=True)
        with open(path + ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # waits while another run trains this stage
            yield StageEntry(path, key)


class StageEntry:
    def __init__(self, path: str, key: dict):
        self.path, self.key = path, key

    @property
    def record_path(self) -> str:
        return os.path.join(self.path, "record.json")

    def load(self) -> dict | None:
        """The saved `{"record", "curve"}`, or None when the entry is absent or was left unfinished. A record whose
        key differs (a hash collision, or a hand-edited folder) is an error, never served."""
        if not os.path.exists(self.record_path):
            return None
        with open(self.record_path, encoding="utf-8") as fh:
            saved = json.load(fh)
        if saved.get("key") != self.key:
            raise ValueError(f"{self.path}: the stage cache entry was written for another config; remove it")
        return saved

    @property
    def adapter_path(self) -> str:
        return os.path.join(self.path, "adapter")

    @property
    def trained_path(self) -> str:
        return os.path.join(self.path, "trained.safetensors")

    def store_changes(self, model: Any) -> None:
        """Save what the stage changed in `model` (the stage's trained model, its adapter not yet merged): the PEFT
        adapter where there is one, and every other trainable parameter by its name in the merged model."""
        from safetensors.torch import save_file

        shutil.rmtree(self.path, ignore_errors=True)  # what an interrupted store left
        os.makedirs(self.path)
        if hasattr(model, "peft_config"):
            model.save_pretrained(self.adapter_path)  # safetensors; the projector as modules_to_save
        trained = {name: param.detach().cpu().contiguous() for name, param in trained_outside_adapter(model)}
        if trained:
            save_file(trained, self.trained_path)

    def store_record(self, record: dict, curve: list) -> None:
        """The record that makes the entry valid, written after its changes."""
        from bioreason.training.run_io import write_json

        write_json(self.record_path, {"key": self.key, "record": record, "curve": curve})

    def apply(self, model: Any) -> Any:
        """`model` (the stage's starting weights, merged) with the stage's changes applied and merged."""
        from safetensors.torch import load_file

        if os.path.isdir(self.adapter_path):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.adapter_path).merge_and_unload()
        if os.path.exists(self.trained_path):
            params = dict(model.named_parameters())
            trained = load_file(self.trained_path)
            unknown = sorted(set(trained) - set(params))
            if unknown:
                raise ValueError(f"{self.trained_path}: the stage cache entry names parameters this model lacks "
                                 f"({unknown[:3]}); remove the entry")
            import torch

            with torch.no_grad():
                for name, value in trained.items():
                    params[name].copy_(value)
        return model


PEFT_PREFIX = "base_model.model."


def trained_outside_adapter(model: Any) -> list[tuple[str, Any]]:
    """(name in the merged model, parameter) of each trainable parameter that the PEFT adapter does not save: LoRA
    matrices and modules_to_save copies are the adapter's; anything else trainable (a projector trained without an
    adapter, as CPT align does, or a whole model trained in full) is named as `merge_and_unload` will name it."""
    out = []
    for name, param in model.named_parameters():
        if not param.requires_grad or "lora_" in name or ".modules_to_save." in name:
            continue
        out.append((name.removeprefix(PEFT_PREFIX) if hasattr(model, "peft_config") else name, param))
    return out
