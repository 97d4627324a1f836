"""What a pipeline run has finished, kept so a killed run resumes instead of starting over.

`OUTPUT_DIR/resume/state.json` holds the finished steps (the baselines, then the records of the base evaluation and each
stage, in order: their names are what is done), and names `resume/model-STAGE/`, the merged model after the last
finished stage. Each is written to a temporary name and renamed into place (the model folder first, then the state that
names it), so a SIGKILL at any moment leaves the previous state and its model whole. A resumed run loads that model and
starts the next stage from the seed, as the uninterrupted run did, so it ends with the same weights (bitwise in fp32 on
CPU: tested). A stage killed midway continues from its newest trainer checkpoint in `checkpoints/STAGE/` (weights,
optimizer, RNG and data position; the pipeline's `checkpoint_every_steps`), or from its start where it had none.
`finish_stage` deletes the stage's checkpoints; `finish` keeps the state (a finished run is not redone) and deletes the
stage models; the run's own outputs are `final/` and `metrics.json`.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from accelerate import PartialState

FORMAT = "bioreason-pipeline-state/1"
# change where and how a run reports or where it finds shared stages, not what it does
IGNORED = {"output_dir", "resume", "report_to", "save_model", "stage_cache", "checkpoint_every_steps"}
CHECKPOINTS = "checkpoints"  # OUTPUT_DIR/checkpoints/STAGE/checkpoint-N: the unfinished stage's trainer checkpoint


def config_key(pipeline, model_args, data) -> dict:
    """The config a run's results depend on, as plain JSON (a resumed run must have the same one)."""
    key = {"pipeline": {k: v for k, v in vars(pipeline).items() if k not in IGNORED}, "model": vars(model_args),
           "data": vars(data)}
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def differences(new: dict, old: dict, prefix: str = "") -> list[str]:
    """The dotted paths where two configs differ, down to a section's setting (`pipeline.sft.lora_r`)."""
    out = []
    for name in sorted(set(new) | set(old)):
        a, b = new.get(name), old.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{name}.")
        elif a != b:
            out.append(f"{prefix}{name}")
    return out


class RunState:
    """The finished steps of one pipeline run (a dict persisted on every update)."""

    def __init__(self, output_dir: str, data: dict):
        self.output_dir = output_dir
        self.dir = os.path.join(output_dir, "resume")
        self.data = data

    @classmethod
    def open(cls, output_dir: str, key: dict, resume: bool = True) -> RunState:
        """The saved state of `output_dir` when `resume` and the config matches, else a fresh one. A different config
        is an error (resuming it would mix two experiments); `resume=false` starts over."""
        path = os.path.join(output_dir, "resume", "state.json")
        if resume and os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                saved = json.load(fh)
            if saved.get("config") != key:
                differ = sorted(differences(key, saved.get("config") or {}))
                raise ValueError(f"{output_dir} holds a run of another config (differs in {', '.join(differ)}); "
                                 "use another output_dir, or resume=false to start over")
            state = cls(output_dir, saved)
        else:
            if PartialState().is_main_process:  # another run's state and checkpoints must not be resumed
                shutil.rmtree(os.path.join(output_dir, "resume"), ignore_errors=True)
                shutil.rmtree(os.path.join(output_dir, CHECKPOINTS), ignore_errors=True)
            state = cls(output_dir, {"format": FORMAT, "config": key, "stages": [], "curve": [], "model": None})
        if PartialState().is_main_process:
            from bioreason.training.run_io import remove_staging

            remove_staging(state.dir)
        return state

    @property
    def done(self) -> list[str]:
        """The finished steps: the base evaluation and the stages, by the records saved for them."""
        return [stage["name"] for stage in self.data["stages"]]

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self._write()

    def _write(self) -> None:
        from bioreason.training.run_io import write_json

        if PartialState().is_main_process:
            os.makedirs(self.dir, exist_ok=True)
            write_json(os.path.join(self.dir, "state.json"), self.data)
        PartialState().wait_for_everyone()

    def _inside(self, name: str) -> str:
        """`output_dir/name` for a model folder named in state.json, refusing a name that leaves the run folder (an
        absolute path, `..`): state.json is a file a user can edit, and the run deletes what it names."""
        root = os.path.realpath(self.output_dir)
        path = os.path.realpath(os.path.join(root, name))
        if os.path.isabs(name) or os.path.commonpath([root, path]) != root or path == root:
            raise ValueError(f"{self.output_dir}/state.json names the model folder {name!r}, which is not inside the "
                             "run folder; delete state.json (or the run folder) to start over")
        return path

    def load_model(self, model_args):
        """The model to continue from: the last finished stage's, else the run's starting model."""
        from dataclasses import replace

        from bioreason.training.prepare import load_model

        path = self._inside(self.data["model"]) if self.data["model"] is not None else None
        if path is None:  # each stage adds its own adapter
            return load_model(replace(model_args, use_peft=False))
        return load_model(replace(model_args, use_peft=False, model_name_or_path=path))

    def finish_stage(self, stage: str, model, processor, stages: list, curve: list) -> None:
        """Save the merged model after `stage`, then the state with the stage's record (last in `stages`), in that
        order: the state never names a model folder that is not whole; the previous stage's model is deleted after."""
        from bioreason.training.run_io import save_final

        previous = self.data["model"]
        name = os.path.join("resume", f"model-{stage}")
        if PartialState().is_main_process:
            save_final(model, processor, os.path.join(self.output_dir, name), merge_lora=False)
        self.update(stages=stages, curve=curve, model=name)
        if PartialState().is_main_process:  # the stage's checkpoints served only to resume it midway
            shutil.rmtree(os.path.join(self.output_dir, CHECKPOINTS, stage), ignore_errors=True)
        if previous and previous != name and PartialState().is_main_process:
            shutil.rmtree(self._inside(previous), ignore_errors=True)

    def finish(self, metrics: dict) -> None:
        """Mark the run finished (a rerun returns `metrics`) and delete the stage models."""
        model = self.data["model"]
        folder = self._inside(model) if model else None  # checked before anything is written or deleted
        self.data["model"] = None
        self.update(finished=True, metrics=metrics)
        if PartialState().is_main_process:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(os.path.join(self.output_dir, CHECKPOINTS), ignore_errors=True)
