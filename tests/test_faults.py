"""SIGKILL anywhere: `bioreason run` (sft, grpo, pipeline) and `bioreason study run` are started as processes and
killed with SIGKILL at named points (`bioreason.training.faults`: mid-step, during a checkpoint write, during
evaluation, between pipeline stages, while final/ is written) or at random moments, then resumed. Required: the final
weights equal an uninterrupted run's bitwise (fp32 on CPU), no partial checkpoint or run folder is ever visible, a
finished stage or run is not redone, and metrics.json equals the uninterrupted run's except for wall-clock `seconds`."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import load_file

from bioreason.data.benchmarks import build_benchmark

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A task, a tiny model folder and one shared disk feature cache (runs share it as a study's runs do)."""
    root = tmp_path_factory.mktemp("faults")
    build_benchmark("antibody_chain", str(root / "task"))
    torch.manual_seed(0)
    model, processor = tiny_model("antiberty", projector="mean")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root


def bioreason(args: list[str], root, kill_at: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "BIOREASON_CACHE": str(root / "cache")}
    env.pop("BIOREASON_KILL_AT", None)
    if kill_at:
        env["BIOREASON_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "bioreason.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(path, "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def without_seconds(value):
    """Metrics minus wall-clock times (the one thing a resumed run cannot reproduce)."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k not in ("seconds", "train_runtime")}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


def assert_nothing_partial(out):
    """Every visible checkpoint and model folder is whole (it loads); staging lives only under dot-names."""
    for dirpath, dirnames, _ in os.walk(out):
        if any(part.startswith(".") for part in os.path.relpath(dirpath, out).split(os.sep)):
            continue
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if name.startswith("checkpoint-"):
                assert os.path.exists(os.path.join(path, "trainer_state.json")), path
                files = os.listdir(path)
                assert any(f.endswith(".safetensors") for f in files), path
                for f in files:
                    if f.endswith(".safetensors"):
                        load_file(os.path.join(path, f))
            elif name == "final" or name.startswith("model-"):
                weights(path)
                assert os.path.exists(os.path.join(path, "config.json")), path
    metrics = os.path.join(out, "metrics.json")
    if os.path.exists(metrics):
        json.loads(open(metrics, encoding="utf-8").read())


# Stage scripts --------------------------------------------------------------------------------------------------------
def stage_config(root, recipe: str, out) -> str:
    path = root / f"{recipe}-{os.path.basename(out)}.yaml"
    common = (f"model_name_or_path: {root / 'model'}\ndataset: {root / 'task'}\noutput_dir: {out}\n"
              "max_eval_examples: 4\nper_device_train_batch_size: 4\nmax_steps: 4\nsave_strategy: steps\n"
              "save_steps: 2\nlearning_rate: 0.01\nuse_peft: true\nlora_r: 4\nuse_cpu: true\nbf16: false\n"
              "report_to: none\nlogging_steps: 1\n")
    if recipe == "sft":
        path.write_text(common + "max_train_examples: 16\n")
    else:
        path.write_text(common + "max_train_examples: 8\nnum_generations: 4\nmax_completion_length: 6\n"
                        "gradient_checkpointing: false\n")
    return str(path)


@pytest.fixture(scope="module")
def uninterrupted(setup):
    runs = {}
    for recipe in ("sft", "grpo"):
        out = setup / f"{recipe}-full"
        proc = bioreason(["run", recipe, "--config", stage_config(setup, recipe, out)], setup)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[recipe] = out
    return runs


STAGE_CASES = [  # (recipe, kill point, checkpoints left); tests/test_kill_points.py counts them
    ("sft", "pre-optimizer-step:3", ["checkpoint-2"]),  # mid-step 3
    ("sft", "checkpoint-staged:2", ["checkpoint-2"]),  # checkpoint-4 written, not renamed into place
    ("sft", "evaluate:1", ["checkpoint-2", "checkpoint-4"]),  # trained, scoring ID
    ("sft", "final-staged:1", ["checkpoint-2", "checkpoint-4"]),  # final/ written, not renamed into place
    ("grpo", "pre-optimizer-step:2", []),
    ("grpo", "checkpoint-staged:2", ["checkpoint-2"]),
]


@pytest.mark.parametrize(("recipe", "kill_at", "checkpoints"), STAGE_CASES)
def test_a_stage_killed_anywhere_resumes_to_the_uninterrupted_weights(setup, uninterrupted, recipe, kill_at,
                                                                       checkpoints):
    out = setup / f"{recipe}-{kill_at.replace(':', '-')}"
    config = stage_config(setup, recipe, out)
    killed = bioreason(["run", recipe, "--config", config], setup, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint-")) == checkpoints
    assert not (out / "final").exists() and not (out / "metrics.json").exists()
    assert_nothing_partial(out)
    resumed = bioreason(["run", recipe, "--config", config, "resume=true"], setup)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(uninterrupted[recipe] / "final", out / "final")
    full = json.loads((uninterrupted[recipe] / "metrics.json").read_text())
    assert without_seconds(json.loads((out / "metrics.json").read_text())) == without_seconds(full)
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]
    again = bioreason(["run", recipe, "--config", config, "resume=true"], setup)  # finished: not redone
    assert again.returncode == 0 and "finished earlier" in again.stdout
    assert_same_weights(uninterrupted[recipe] / "final", out / "final")


# Pipeline -------------------------------------------------------------------------------------------------------------
def pipeline_config(root, out) -> str:
    path = root / f"pipeline-{os.path.basename(out)}.yaml"
    path.write_text(
        f"output_dir: {out}\nmodel_name_or_path: {root / 'model'}\ndataset: {root / 'task'}\nstages: [cpt, sft, grpo]\n"
        "total_examples: 8\nrl_fraction: 0.5\ncpt_examples: 4\nmax_eval_examples: 3\neval_every_steps: 1\n"
        "checkpoint_every_steps: 1\n"
        "bf16: false\ncpt:\n  per_device_train_batch_size: 2\nsft:\n  per_device_train_batch_size: 2\n"
        "  lora_r: 8\n  learning_rate: 0.01\ngrpo:\n  lora_r: 2\n  num_generations: 2\n"
        "  per_device_train_batch_size: 4\n  max_completion_length: 4\n")
    return str(path)


@pytest.fixture(scope="module")
def pipeline_full(setup):
    out = setup / "pipeline-full"
    proc = bioreason(["run", "pipeline", "--config", pipeline_config(setup, out)], setup)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


PIPELINE_CASES = [  # (kill point, stages finished before it, the checkpoint the killed stage continues from);
    # tests/test_kill_points.py counts them. Each stage takes 2 steps (CPT steps 1-2, SFT 3-4, GRPO 5-6) and checkpoints
    # every step.
    ("pre-optimizer-step:2", ["base"], "cpt/checkpoint-1"),  # mid-CPT
    ("pre-optimizer-step:4", ["base", "cpt"], "sft/checkpoint-1"),  # mid-SFT
    ("pre-optimizer-step:6", ["base", "cpt", "sft"], "grpo/checkpoint-1"),  # mid-GRPO
    ("pre-optimizer-step:3", ["base", "cpt"], None),  # mid-step, the first SFT step: no checkpoint of SFT yet
    ("stage-saved:1", ["base", "cpt"], None),  # between CPT and SFT
    ("stage-trained:2", ["base", "cpt"], "sft/checkpoint-2"),  # SFT trained and scored, its state not yet saved
    ("evaluate:6", ["base", "cpt", "sft"], None),  # scoring GRPO's first step, before its checkpoint
    ("final-staged:1", ["base"], "cpt/checkpoint-2"),  # CPT's model saved for resuming, not renamed into place
    ("final-staged:4", ["base", "cpt", "sft", "grpo"], None),  # final/ written, not renamed into place
]


@pytest.mark.parametrize(("kill_at", "done", "continues"), PIPELINE_CASES)
def test_a_pipeline_killed_anywhere_resumes_after_its_last_finished_stage(setup, pipeline_full, kill_at, done,
                                                                          continues):
    out = setup / f"pipeline-{kill_at.replace(':', '-')}"
    config = pipeline_config(setup, out)
    killed = bioreason(["run", "pipeline", "--config", config], setup, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert_nothing_partial(out)
    assert not (out / "final").exists() and not (out / "metrics.json").exists()
    state = json.loads((out / "resume" / "state.json").read_text())
    assert [s["name"] for s in state["stages"]] == done
    resumed = bioreason(["run", "pipeline", "--config", config], setup)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {out} after {', '.join(done)}" in resumed.stdout
    if continues:
        stage = continues.split("/")[0]
        assert f"{stage}: continuing from {out / 'checkpoints' / continues}" in resumed.stdout
    else:
        assert "continuing from" not in resumed.stdout
    assert_same_weights(pipeline_full / "final", out / "final")
    metrics = json.loads((out / "metrics.json").read_text())
    assert without_seconds(metrics) == without_seconds(json.loads((pipeline_full / "metrics.json").read_text()))
    kept = [s for s in metrics["stages"] if s["name"] in done]  # finished stages were not run again: their
    assert kept == state["stages"]  # records, wall-clock seconds included, are the killed run's
    assert not [p for p in os.listdir(out / "resume") if p != "state.json"]  # stage models deleted when finished
    assert not (out / "checkpoints").exists()  # and the stages' checkpoints
    from bioreason.recipes.pipeline import verify_run_folder

    verify_run_folder(str(out))
    stamp = os.path.getmtime(out / "final" / "model.safetensors")
    again = bioreason(["run", "pipeline", "--config", config], setup)
    assert again.returncode == 0 and "finished earlier" in again.stdout
    assert os.path.getmtime(out / "final" / "model.safetensors") == stamp


def test_a_pipeline_folder_of_another_config_is_not_resumed(setup, pipeline_full):
    proc = bioreason(["run", "pipeline", "--config", pipeline_config(setup, pipeline_full), "sft.lora_r=4"], setup)
    assert proc.returncode == 2
    assert "holds a run of another config (differs in pipeline.sft.lora_r)" in proc.stderr
    assert "resume=false" in proc.stderr


# Study ----------------------------------------------------------------------------------------------------------------
def study_config(root) -> str:
    path = root / "study.yaml"
    path.write_text(
        f"base:\n  model_name_or_path: {root / 'model'}\n  dataset: {root / 'task'}\n  stages: [sft, grpo]\n"
        "  sft_examples: 12\n  rl_examples: 8\n  max_eval_examples: 3\n  eval_every_steps: 1\n  bf16: false\n"
        "  save_model: false\n  sft:\n    per_device_train_batch_size: 2\n  grpo:\n    lora_r: 2\n"
        "    num_generations: 2\n    per_device_train_batch_size: 4\n    max_completion_length: 4\n"
        "grid:\n  seed: [0, 1]\n  sft.lora_r: [4, 8]\n")
    return str(path)


def study(root, out) -> subprocess.Popen:
    env = {**os.environ, "BIOREASON_CACHE": str(root / "cache")}
    return subprocess.Popen([sys.executable, "-m", "bioreason.cli", "study", "run", study_config(root), "--out",
                             str(out), "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)


def assert_no_run_left_going(out):
    """After the study died, none of its runs holds its folder (they died with it)."""
    import fcntl

    for name in os.listdir(out / "runs"):
        lock = out / "runs" / name / ".lock"
        if lock.exists():
            with open(lock) as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if a run still holds it
                fcntl.flock(fh, fcntl.LOCK_UN)
        assert_nothing_partial(out / "runs" / name)


def table(path):
    import pandas as pd

    frame = pd.read_csv(path)
    return frame.drop(columns=[c for c in frame.columns if c.endswith("seconds")])


def test_a_study_killed_twice_at_random_moments_ends_with_the_same_results(setup):
    import pandas as pd

    full = setup / "study-full"
    start = time.time()
    proc = study(setup, full)
    _, err = proc.communicate(timeout=900)
    duration = time.time() - start
    assert proc.returncode == 0, err[-3000:]
    rng = random.Random(13)
    out = setup / "study-killed"

    def progress() -> tuple[int, int]:
        """(stages finished across the runs' saved states, runs done)."""
        states = [json.loads(p.read_text()) for p in out.glob("runs/*/resume/state.json")]
        return sum(len(s["stages"]) for s in states), len(list(out.glob("runs/*/DONE")))

    # kill at random moments after progress: the first once a run has finished SFT (at most 2 runs go at a time, so 3
    # finished steps mean one got past its base evaluation), the second once a run is done; each after a random extra
    # moment, so the kills land mid-stage, mid-save or between runs
    for reached in (lambda: progress()[0] >= 3, lambda: progress()[1] >= 1):
        proc = study(setup, out)
        deadline = time.time() + duration
        while not reached() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.1) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL  # killed mid-study, not after it ended
        time.sleep(1.0)  # PR_SET_PDEATHSIG delivers at once; give the kernel a moment to reap
        assert_no_run_left_going(out)
    proc = study(setup, out)
    stdout, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert "already done" in stdout
    pd.testing.assert_frame_equal(table(out / "results.csv"), table(full / "results.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(out / "curve.csv"), pd.read_csv(full / "curve.csv"))
    assert len(pd.read_csv(out / "results.csv")) == 4
