"""Finished stages shared between pipeline runs whose configs agree up to that stage.

Why: a study's SFT-rank x RL-rank grid (and every `rl_start` or RL-budget axis) trains the same SFT once per RL
setting. Each stage starts from the seed (`bioreason.recipes.pipeline`), so the model after a stage depends only on
the settings of that stage and the ones before it; the second run can load it instead of training it again, which
halves a CPU study's SFT time. An entry is keyed by a hash of exactly those settings (`prefix_key`) and holds the merged
model and the stage's record; `record.json` is written last, so an entry without it is not served. An exclusive
`flock` per entry makes a second run wait for the first one's training instead of repeating it; the OS releases it
however a process ends. A run stores every stage but its last (no later stage of another run starts from it), and
`bioreason study run` removes the folder once every run has finished: each entry is a whole merged model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

FORMAT = "bioreason-stage-cache/1"


def prefix_key(key: dict, stages: list[str], stage: str, sections: dict, budgets: dict) -> dict:
    """What the model after `stage` depends on: the run's config key (`run_state.config_key`) without the sections,
    budgets and stage list of the stages after it, with the resolved sections and budgets of this one and those
    before it (so a default spelled out and one left out agree)."""
    done = stages[: stages.index(stage) + 1]
    later_only = {"cpt", "sft", "grpo", "stages", "total_examples", "rl_fraction", "sft_examples", "rl_examples",
                  "cpt_examples", "evaluate_base"}
    pipeline = {k: v for k, v in key["pipeline"].items() if k not in later_only}
    pipeline.update(stages=done, sections={s: sections[s] for s in done}, budgets={s: budgets[s] for s in done})
    prefix = {**key, "pipeline": pipeline, "format": FORMAT}
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
    def model_path(self) -> str:
        return os.path.join(self.path, "model")

    def store(self, model: Any, processor: Any, record: dict, curve: list) -> None:
        """Save the merged model, then the record that makes the entry valid."""
        from bioreason.training.run_io import save_final, write_json

        shutil.rmtree(self.path, ignore_errors=True)  # what an interrupted store left
        save_final(model, processor, self.model_path, merge_lora=False)
        write_json(self.record_path, {"key": self.key, "record": record, "curve": curve})
