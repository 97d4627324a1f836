"""Recipes on tiny models: what should train does, what is frozen stays, GRPO keeps the encoder in the loop,
kill-and-resume reproduces an uninterrupted run, a 2-process DDP run on CPU (gloo), and the pipeline's run folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from bioreason.data.benchmarks import build_benchmark
from bioreason.training.rewards import REWARDS, register_reward

CPU = ["--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--logging_steps", "1"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "antibody"
    build_benchmark("antibody_chain", str(path))
    return str(path)


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    model, processor = tiny_model("antiberty", projector="mean")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    return str(tmp_path / "model")


def weights(path):
    return load_file(os.path.join(path, "model.safetensors"))


def changed(before, after, prefix):
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


def test_sft_with_lora_changes_llm_and_projector_not_encoder(tmp_path, task, model_dir, monkeypatch):
    from bioreason.recipes.sft import main
    from bioreason.training import task as task_module

    scored = []  # whether the model scored still has LoRA layers: it is scored as saved, merged
    evaluate_records = task_module.evaluate_records
    monkeypatch.setattr(task_module, "evaluate_records", lambda model, *a, **k: (
        scored.append(any("lora_" in name for name, _ in model.named_modules())), evaluate_records(model, *a, **k))[1])
    result = main(["--model_name_or_path", model_dir, "--dataset", task, "--max_train_examples", "16",
                   "--max_eval_examples", "4", "--output_dir", str(tmp_path / "out"),
                   "--per_device_train_batch_size", "4", "--max_steps", "2", "--learning_rate", "1e-2",
                   "--use_peft", "true", "--lora_r", "4", *CPU])
    before, after = weights(model_dir), weights(tmp_path / "out" / "final")
    assert changed(before, after, "model.projectors.")
    assert changed(before, after, "model.language_model.layers.")  # the merged LoRA delta
    assert not changed(before, after, "model.encoders.")
    assert result["steps"] == 2 and {"id", "ood"} <= set(result)
    assert scored and not any(scored)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["id"]["n"] == 4 and 0 <= metrics["ood"]["accuracy"] <= 1
    # the saved model carries its task, and `bioreason generate` asks the task's question without --prompt
    saved = json.loads((tmp_path / "out" / "final" / "processor_config.json").read_text())["task"]
    assert saved["question"].startswith("<protein>\n") and saved["label_set"] == ["heavy", "kappa", "lambda"]
    from bioreason.cli import main as cli

    asked = []
    from bioreason.model.processing_bioreason import BioReasonProcessor

    original = BioReasonProcessor.apply_chat_template

    def spy(self, conversation, *args, **kwargs):
        asked.append(conversation)
        return original(self, conversation, *args, **kwargs)

    monkeypatch.setattr(BioReasonProcessor, "apply_chat_template", spy)
    assert cli(["generate", "--model", str(tmp_path / "out" / "final"), "--protein", "EVQLVESGGGLVQ",
                "--max-new-tokens", "2"]) == 0
    assert asked[-1][1]["content"] == saved["question"] and asked[-1][0]["content"] == saved["system_prompt"]


def test_the_projectors_train_at_their_own_learning_rate(tmp_path, task, model_dir):
    """`projector_learning_rate` puts the projectors in optimizer groups of their own: at 0 they stay exactly as they
    were while the LoRA delta still moves the LLM; the groups hold every trainable parameter once."""
    from bioreason.recipes.sft import main
    from bioreason.training.sft_trainer import BioSFTTrainer

    seen = {}
    create = BioSFTTrainer.create_optimizer

    def spy(self, model=None):
        optimizer = create(self, model)
        names = {id(p): n for n, p in self.model.named_parameters() if p.requires_grad}
        seen["groups"] = [(g["lr"], [names[id(p)] for p in g["params"]]) for g in optimizer.param_groups]
        seen["trainable"] = sorted(names.values())
        return optimizer

    BioSFTTrainer.create_optimizer = spy
    try:
        main(["--model_name_or_path", model_dir, "--dataset", task, "--max_train_examples", "8",
              "--max_eval_examples", "2", "--output_dir", str(tmp_path / "out"), "--per_device_train_batch_size", "4",
              "--max_steps", "2", "--learning_rate", "1e-2", "--projector_learning_rate", "0", "--use_peft", "true",
              "--lora_r", "4", *CPU])
    finally:
        BioSFTTrainer.create_optimizer = create
    before, after = weights(model_dir), weights(tmp_path / "out" / "final")
    assert not changed(before, after, "model.projectors.")
    assert changed(before, after, "model.language_model.layers.")
    grouped = sorted(n for _, names in seen["groups"] for n in names)
    assert grouped == seen["trainable"]  # nothing dropped, nothing twice
    for lr, names in seen["groups"]:
        assert all((".projectors." in n) == (lr == 0) for n in names)
    assert any(lr == 0 for lr, _ in seen["groups"]) and any(lr == 1e-2 for lr, _ in seen["groups"])


def test_cpt_align_trains_only_projectors(tmp_path, task, model_dir):
    from bioreason.recipes.cpt import main

    main(["--model_name_or_path", model_dir, "--dataset", task, "--mode", "align", "--max_train_examples", "8",
          "--max_eval_examples", "2", "--output_dir", str(tmp_path / "out"), "--per_device_train_batch_size", "4",
          "--max_steps", "2", "--learning_rate", "1e-2", *CPU])
    before, after = weights(model_dir), weights(tmp_path / "out" / "final")
    assert changed(before, after, "model.projectors.")
    assert not changed(before, after, "model.encoders.")
    assert not changed(before, after, "model.language_model.")


def test_cpt_text_trains_the_llm_on_packed_text(tmp_path, model_dir):
    from bioreason.recipes.cpt import main

    corpus = tmp_path / "bio.txt"
    corpus.write_text("\n\n".join(f"Antibodies bind antigens through their CDR loops {i}." for i in range(40)))
    main(["--model_name_or_path", model_dir, "--mode", "text", "--text_files", str(corpus), "--packing", "true",
          "--max_length", "64", "--output_dir", str(tmp_path / "out"), "--per_device_train_batch_size", "2",
          "--max_steps", "2", "--learning_rate", "1e-2", *CPU])
    before, after = weights(model_dir), weights(tmp_path / "out" / "final")
    assert changed(before, after, "model.language_model.layers.")


@pytest.fixture
def varied_reward():
    """A reward that differs between samples, so advantages (and gradients) are non-zero."""
    register_reward("test_varied")(lambda completions, **_: [float(len(str(c)) % 3) for c in completions])
    yield "test_varied"
    REWARDS.pop("test_varied")


def test_grpo_keeps_the_encoder_in_the_loop(tmp_path, task, model_dir, monkeypatch, varied_reward):
    from bioreason.recipes import grpo

    calls = []
    original_init = grpo.BioGRPOTrainer.__init__

    def spy_init(self, *args, **kwargs):  # record every projector call and whether it could backpropagate
        original_init(self, *args, **kwargs)
        for proj in self.model.model.projectors.values() if hasattr(self.model, "model") else []:
            proj.register_forward_hook(lambda m, a, o: calls.append(torch.is_grad_enabled()))

    monkeypatch.setattr(grpo.BioGRPOTrainer, "__init__", spy_init)
    result = grpo.main(["--model_name_or_path", model_dir, "--dataset", task, "--max_train_examples", "4",
                        "--max_eval_examples", "2", "--output_dir", str(tmp_path / "out"),
                        "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_steps", "2",
                        "--max_completion_length", "6", "--learning_rate", "1e-2", "--gradient_checkpointing",
                        "false", "--rewards", varied_reward, "--beta", "0.1", "--llm_trainable", "false", *CPU])
    assert False in calls and True in calls  # features fed generation (no grad) and the loss pass (grad)
    before, after = weights(model_dir), weights(tmp_path / "out" / "final")
    assert changed(before, after, "model.projectors.")  # gradients reached the projector through the RL loss
    assert not changed(before, after, "model.encoders.")
    assert not changed(before, after, "model.language_model.")
    assert result["steps"] == 2 and result["world_size"] == 1  # one skeleton: GRPO records what SFT records


def test_a_model_handed_to_a_stage_script_is_prepared_like_a_loaded_one(tmp_path, task, model_dir):
    """`sft.run(model=...)` (how the pipeline hands a model on) applies the stage's freeze policy and LoRA through
    the same `prepare_model` as a loaded model: the LLM adapts through rank-4 LoRA, a frozen encoder stays frozen,
    and the projectors follow `projectors_trainable`."""
    from transformers import AutoProcessor
    from trl import SFTConfig

    from bioreason.recipes import sft
    from bioreason.training.arguments import DataArguments, ModelArguments

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    model.set_trainable(encoders=True, projectors=True, llm=True)  # what an earlier stage may have left
    stage = ModelArguments(use_peft=True, lora_r=4, projectors_trainable=False, encoders_trainable=False,
                           feature_cache="off")
    config = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=2,
                       use_cpu=True, bf16=False, report_to="none", save_strategy="no")
    result = sft.run(sft.SFTRecipeArguments(evaluate=False), stage, DataArguments(dataset=task, max_train_examples=2),
                     config, model=model, processor=processor)
    trained = result["model"]
    assert trained.peft_config["default"].r == 4
    trainable = [n for n, p in trained.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # no encoder, no projector, no full LLM weight
    assert result["world_size"] == 1 and result["steps"] == 1
    with pytest.raises(ValueError, match="merge"):  # an adapter on top of an adapter is refused
        sft.run(sft.SFTRecipeArguments(evaluate=False), stage, DataArguments(dataset=task, max_train_examples=2),
                config, model=trained, processor=processor)


def test_section_settings_parse_without_a_temporary_file(tmp_path, monkeypatch):
    """One config path: the file is read once and the overrides fold into it in memory (no temporary YAML is
    written); a dotted override works without a file too, and an unknown key names the nearest setting."""
    import tempfile

    from bioreason.recipes.pipeline import ARGUMENTS
    from bioreason.training.config import parse_arguments

    def no_temporary_files(*args, **kwargs):
        raise AssertionError("a temporary file was written")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_temporary_files)
    monkeypatch.setattr(tempfile, "mkstemp", no_temporary_files)
    config = tmp_path / "p.yaml"
    config.write_text("sft:\n  lora_r: 8\ngrpo.lora_r: 2\nenv:\n  BIOREASON_TEST_ENV: set-by-config\n")
    monkeypatch.delenv("BIOREASON_TEST_ENV", raising=False)
    p, _, data = parse_arguments(ARGUMENTS, ["--config", str(config), "--sft.learning_rate", "1e-3",
                                             "--max_eval_examples", "200"])
    assert p.sft == {"lora_r": 8, "learning_rate": 1e-3} and p.grpo == {"lora_r": 2}
    assert data.max_eval_examples == 200 and os.environ["BIOREASON_TEST_ENV"] == "set-by-config"
    p, _, _ = parse_arguments(ARGUMENTS, ["--sft.lora_r", "64"])
    assert p.sft == {"lora_r": 64}
    with pytest.raises(ValueError, match="`lora_rank` is not a setting.*did you mean"):
        parse_arguments(ARGUMENTS, ["--lora_rank", "8"])
    config.write_text("max_eval_exampels: 200\n")
    with pytest.raises(ValueError, match=f"{config}: `max_eval_exampels`.*max_eval_examples"):
        parse_arguments(ARGUMENTS, ["--config", str(config)])


class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt("killed")


def killed_at_step_3(monkeypatch, trainer_class, run):
    """`run()` with every `trainer_class` killed at the end of step 3 (KeyboardInterrupt), then the class restored."""
    original = trainer_class.__init__

    def with_kill(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(Kill())

    monkeypatch.setattr(trainer_class, "__init__", with_kill)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(trainer_class, "__init__", original)


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path, task, model_dir, monkeypatch):
    from bioreason.recipes import sft

    argv = ["--model_name_or_path", model_dir, "--dataset", task, "--max_train_examples", "16", "--evaluate", "false",
            "--per_device_train_batch_size", "2", "--max_steps", "4", "--save_strategy", "steps", "--save_steps",
            "2", "--learning_rate", "1e-2", "--use_peft", "true", "--lora_r", "4", *CPU]
    sft.main([*argv, "--output_dir", str(tmp_path / "full")])

    killed_at_step_3(monkeypatch, sft.BioSFTTrainer,
                     lambda: sft.main([*argv, "--output_dir", str(tmp_path / "killed")]))
    assert sorted(p for p in os.listdir(tmp_path / "killed") if p.startswith("checkpoint-")) == ["checkpoint-2"]
    sft.main([*argv, "--output_dir", str(tmp_path / "killed"), "--resume", "true"])
    full, resumed = weights(tmp_path / "full" / "final"), weights(tmp_path / "killed" / "final")
    for key in full:
        assert torch.allclose(full[key], resumed[key], atol=1e-6), key


def sft_yaml(path, model_dir, task, out, max_steps: int) -> str:
    path.write_text(f"model_name_or_path: {model_dir}\ndataset: {task}\nmax_train_examples: 16\nevaluate: false\n"
                    f"output_dir: {out}\nper_device_train_batch_size: 2\nmax_steps: {max_steps}\n"
                    "save_strategy: steps\nsave_steps: 2\nuse_cpu: true\nbf16: false\nreport_to: none\n"
                    "feature_cache: memory\n")
    return str(path)


def test_a_checkpoint_write_the_kernel_refuses_leaves_no_checkpoint(tmp_path, task, model_dir):
    """A file-size limit (RLIMIT_FSIZE): the first checkpoint's weights file cannot be written past 16 KiB, so the
    write fails partway with EFBIG; the partial checkpoint is removed and the error is one line."""
    from small_disk import run_with_file_size_limit

    out = tmp_path / "out"
    config = sft_yaml(tmp_path / "sft.yaml", model_dir, task, out, max_steps=2)
    proc = run_with_file_size_limit(["-m", "bioreason.cli", "run", "sft", "--config", config], limit=16 << 10)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (err,) = [line for line in proc.stderr.splitlines() if line.startswith("bioreason:")]
    assert err.startswith("bioreason: error: [Errno 27] could not write ") and "checkpoint-2" in err
    assert "nothing earlier was there" in err
    assert not [p for p in os.listdir(out) if p.startswith("checkpoint-")]
    assert not os.listdir(out / ".staging")


@pytest.mark.skipif("not __import__('small_disk').tmpfs_available()",
                    reason="no user + mount namespaces here for a size-limited tmpfs")
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so_in_one_line(tmp_path, task, model_dir):
    """A tmpfs with room for one checkpoint and a half: checkpoint-2 fits, checkpoint-4 fills the disk partway
    (ENOSPC from the kernel, partial files in .staging); checkpoint-2 stays whole, no partial copy is left, one line
    says so. The run with room is a fresh process too, as the one on the small disk: one beside the earlier tests
    could differ from it by an ulp (a scanpy fit earlier in pytest did, f83a491), which is not what this checks."""
    import subprocess
    import sys

    from small_disk import ROOT, room_for_one_and_a_half, run_on_small_disk

    measure = sft_yaml(tmp_path / "measure.yaml", model_dir, task, tmp_path / "measure", max_steps=6)
    subprocess.run([sys.executable, "-m", "bioreason.cli", "run", "sft", "--config", measure], cwd=ROOT, check=True,
                   capture_output=True)
    mount, keep = tmp_path / "disk", tmp_path / "kept"
    mount.mkdir()
    out = mount / "out"
    config = sft_yaml(tmp_path / "sft.yaml", model_dir, task, out, max_steps=6)
    proc = run_on_small_disk(["-m", "bioreason.cli", "run", "sft", "--config", config],
                             size=room_for_one_and_a_half(tmp_path / "measure" / "checkpoint-2"), mount=mount,
                             keep=keep)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (err,) = [line for line in proc.stderr.splitlines() if line.startswith("bioreason:")]  # one line
    assert "Traceback" not in proc.stderr
    assert err.startswith("bioreason: error: [Errno 28] could not write ") and "checkpoint-4" in err
    assert err.endswith(f"{out / 'checkpoint-2'} is intact (--debug shows the traceback)")
    assert sorted(p for p in os.listdir(keep / "out") if p.startswith("checkpoint-")) == ["checkpoint-2"]
    assert not os.listdir(keep / "out" / ".staging")
    kept, measured = weights(keep / "out" / "checkpoint-2"), weights(tmp_path / "measure" / "checkpoint-2")
    assert all(torch.equal(kept[k], measured[k]) for k in measured)  # whole: the same as a run with room


SAVE_TWICE = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoProcessor
import bioreason
from bioreason.training.run_io import save_final
model, processor = AutoModelForCausalLM.from_pretrained(sys.argv[1]), AutoProcessor.from_pretrained(sys.argv[1])
save_final(model, processor, sys.argv[2])
with torch.no_grad():
    next(model.parameters()).add_(1.0)
try:
    save_final(model, processor, sys.argv[2])
except OSError as err:
    print(err)
    sys.exit(3)
"""


@pytest.mark.skipif("not __import__('small_disk').tmpfs_available()",
                    reason="no user + mount namespaces here for a size-limited tmpfs")
def test_a_failed_final_save_keeps_the_previous_final(tmp_path, model_dir):
    """final/ saved on a tmpfs with room for one and a half copies, then saved again with changed weights: the second
    write fills the disk partway; the first final/ stays as it was and no staging folder is left."""
    from small_disk import room_for_one_and_a_half, run_on_small_disk

    mount, keep = tmp_path / "disk", tmp_path / "kept"
    mount.mkdir()
    proc = run_on_small_disk(["-c", SAVE_TWICE, model_dir, str(mount / "run" / "final")],
                             size=room_for_one_and_a_half(Path(model_dir)), mount=mount, keep=keep)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert re.search(r"could not write .*final \(No space left on device\).* is intact", proc.stdout)
    assert os.listdir(keep / "run") == ["final"]  # no staging folder left behind
    before, after = weights(model_dir), weights(keep / "run" / "final")
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path, task, model_dir):
    config = tmp_path / "sft.yaml"
    config.write_text(
        f"model_name_or_path: {model_dir}\ndataset: {task}\nmax_train_examples: 16\nevaluate: false\n"
        f"output_dir: {tmp_path / 'out'}\nper_device_train_batch_size: 2\nmax_steps: 2\nlearning_rate: 0.01\n"
        "use_peft: true\nlora_r: 4\nuse_cpu: true\nbf16: false\nreport_to: none\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # torchrun: accelerate's own multi-process CPU launcher needs MPI; torchrun gives the same DDP over gloo
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "bioreason.recipes.sft",
         "--config", str(config)],
        capture_output=True, text=True, timeout=600, cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["world_size"] == 2
    before, after = weights(model_dir), weights(tmp_path / "out" / "final")
    assert changed(before, after, "model.projectors.")


def test_verify_run_folder_rejects_an_incomplete_run(tmp_path):
    from bioreason.recipes.pipeline import verify_run_folder

    (tmp_path / "metrics.json").write_text(json.dumps({"stages": [{"name": "sft", "id": {}, "ood": {}, "steps": 1,
                                                                   "seconds": 1}]}))
    with pytest.raises(ValueError, match=r"stages \['sft'\], expected \['cpt', 'sft', 'grpo'\]"):
        verify_run_folder(str(tmp_path))
    with pytest.raises(ValueError, match=r"stage sft lacks \['validation'\]"):
        verify_run_folder(str(tmp_path), stages=("sft",))
    scored = {"n": 10, "accuracy": 0.5, "accuracy_lo": 0.2, "accuracy_hi": 0.8, "macro_f1": 0.4, "macro_f1_lo": 0.1,
              "macro_f1_hi": 0.7, "prediction_rate": {"a": 1.0}}
    stage = {"name": "sft", "validation": scored, "id": scored, "ood": scored, "steps": 1, "seconds": 1}
    (tmp_path / "metrics.json").write_text(json.dumps({"stages": [stage]}))
    with pytest.raises(ValueError, match=r"stage sft id lacks \['reliance', 'reliance_cross_label'"):
        verify_run_folder(str(tmp_path), stages=("sft",))


def test_report_to_tensorboard_writes_events(tmp_path, task, model_dir):
    pytest.importorskip("tensorboard")
    from bioreason.recipes.sft import main

    main(["--model_name_or_path", model_dir, "--dataset", task, "--max_train_examples", "4", "--evaluate", "false",
          "--output_dir", str(tmp_path / "out"), "--per_device_train_batch_size", "2", "--max_steps", "1",
          "--use_cpu", "true", "--bf16", "false", "--report_to", "tensorboard", "--logging_steps", "1"])
    assert list(tmp_path.rglob("events.out.tfevents.*"))


def test_pipeline_run_folder(tmp_path, task, model_dir):
    config = tmp_path / "pipe.yaml"
    out = tmp_path / "run"
    config.write_text(
        f"output_dir: {out}\nmodel_name_or_path: {model_dir}\ndataset: {task}\nstages: [cpt, sft, grpo]\n"
        "total_examples: 8\nrl_fraction: 0.5\ncpt_examples: 4\nmax_eval_examples: 3\neval_every_steps: 1\n"
        "bf16: false\n"
        "sft:\n  lora_r: 8\ngrpo:\n  lora_r: 2\n  num_generations: 2\n  per_device_train_batch_size: 4\n"
        "  max_completion_length: 4\n"
    )
    proc = subprocess.run([sys.executable, "-m", "bioreason.cli", "run", "pipeline", "--config", str(config),
                           "sft.learning_rate=0.01"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # nothing printed that is not about this run: no library deprecation or offline-kernel warnings
    for noise in ("FutureWarning", "gemm_4bit_forward", "Skipping publisher trust check"):
        assert noise not in proc.stderr, noise
    from bioreason.recipes.pipeline import verify_run_folder

    metrics = verify_run_folder(str(out))
    assert [s["name"] for s in metrics["stages"]] == ["base", "cpt", "sft", "grpo"]
    for i, stage in enumerate(metrics["stages"]):
        assert {"validation", "id", "ood", "steps", "seconds"} <= set(stage)
        assert stage["id"]["n"] == 3 and stage["ood"]["n"] == 3 and stage["validation"]["n"] > 0
        for split in ("id", "ood"):  # every scored stage says how much it reads its encoder
            assert stage[split]["reliance"] == pytest.approx(stage[split]["accuracy"] -
                                                             stage[split]["accuracy_swapped"])
            assert stage[split]["accuracy_lo"] <= stage[split]["accuracy"] <= stage[split]["accuracy_hi"]
            assert sum(stage["correct"][split]) == round(stage[split]["accuracy"] * 3)
        if i:  # each stage paired with the one before it, on the same records
            before = metrics["stages"][i - 1]
            for split in ("validation", "id", "ood"):
                paired = stage["vs_previous"][split]
                assert paired["stage"] == before["name"]
                assert paired["difference"] == pytest.approx(stage[split]["accuracy"] - before[split]["accuracy"])
    for name in ("majority", "probe"):  # the baselines, scored on the same 3 + 3 records
        assert metrics["baselines"][name]["id"]["n"] == 3 and metrics["baselines"][name]["ood"]["n"] == 3
    report = (out / "report.md").read_text()
    assert "*probe baseline*" in report and "ID reliance" in report and "ID cross-label" in report
    assert "| sft vs cpt |" in report and "McNemar" in report
    assert metrics["budget"]["sft_examples"] == 4 and metrics["budget"]["rl_examples"] == 4
    assert metrics["curve"] and {c["stage"] for c in metrics["curve"]} == {"cpt", "sft", "grpo"}
    for stage in metrics["stages"][1:]:  # one point a step; the last is the stage's own evaluation, not a rerun
        points = [c for c in metrics["curve"] if c["stage"] == stage["name"]]
        assert [c["step"] for c in points] == list(range(1, stage["steps"] + 1))
        last = {k: v for k, v in points[-1]["validation"].items() if k != "correct"}  # the per-record vector aside
        assert last == stage["validation"] and points[-1]["validation"]["correct"] == stage["correct"]["validation"]
        assert all(set(c) == {"stage", "step", "validation"} for c in points)  # checkpoints are chosen on validation
    assert metrics["precision"]["bf16"] is False and metrics["precision"]["requested"] == "false"
    assert json.loads((out / "run_config.json").read_text())["precision"] == metrics["precision"]
    assert "Precision: fp32" in (out / "README.md").read_text()
    assert (out / "report.md").exists() and (out / "stages.png").exists() and (out / "curve.png").exists()
    import bioreason  # noqa: F401

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert type(model).__name__ == "BioReasonForCausalLM"
    assert model.config.projectors_trainable  # GRPO froze them; the saved model keeps the default freeze policy
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")
    names = {r.dataset_name for r in card.data.eval_results}
    assert any("(id)" in n for n in names) and any("(ood)" in n for n in names)
    metric_names = {(r.metric_type, r.metric_name) for r in card.data.eval_results}
    assert ("reliance", None) in metric_names and ("accuracy", "probe baseline accuracy") in metric_names
    assert "*majority baseline*" in card.text
    assert card.text.split("\n# ", 1)[1].startswith(f"{out.name}\n")  # titled by the run, not "final" or "model"
    assert "## How to use" in card.text and f'from_pretrained("{out / "final"}")' in card.text  # the saved task
    assert "pip install -e .  # in a checkout of the bioreason repository" in card.text  # no remote code here



def test_a_model_handed_to_the_next_stage_is_prepared_again_with_autocast():
    """accelerate marks a prepared model and a PEFT wrapper forwards attribute lookups to it: without
    `release_from_trainer` the next stage's accelerator skipped the LoRA-wrapped model (no autocast wrapper; the
    trainer's LM head, installed over the old wrapper, then ran every pipeline stage after CPT in fp32)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from bioreason.training.adaptation import apply_lora
    from bioreason.training.prepare import base_model, release_from_trainer

    def prepare(model) -> tuple[bool, list[bool]]:
        """(did the accelerator wrap this model's forward, autocast state seen by the LLM in one forward)"""
        AcceleratorState._reset_state(reset_partial_state=True)
        try:
            prepared = Accelerator(mixed_precision="bf16", cpu=True).prepare_model(model)
            seen: list[bool] = []
            hook = base_model(prepared).model.language_model.layers[0].register_forward_pre_hook(
                lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
            ids = torch.tensor([[5, 6, 7]])
            prepared(input_ids=ids, attention_mask=torch.ones_like(ids))
            hook.remove()
            return "_original_forward" in vars(prepared), seen
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)

    model, _ = tiny_model("esm2")
    assert prepare(model) == (True, [True])  # stage 1
    assert prepare(apply_lora(model, r=2))[0] is False  # the bug: the stage-1 mark shows through the PEFT wrapper
    model, _ = tiny_model("esm2")
    prepare(model)
    release_from_trainer(model)
    assert "forward" not in vars(model) and not hasattr(model, "_is_accelerate_prepared")
    assert prepare(apply_lora(model, r=2)) == (True, [True])


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINE_CONFIGS = sorted([os.path.join(REPO, "recipes", "configs", "quickstart.yaml")] + [
    os.path.join(REPO, "recipes", "configs", d, "pipeline.yaml") for d in os.listdir(os.path.join(REPO, "recipes",
                                                                                                     "configs"))
    if os.path.exists(os.path.join(REPO, "recipes", "configs", d, "pipeline.yaml"))])


STUDY_CONFIGS = sorted(os.path.join(REPO, "recipes", "configs", "study", f)
                       for f in os.listdir(os.path.join(REPO, "recipes", "configs", "study")))


def test_each_stage_is_scored_with_its_adapter_merged_as_the_saved_model(tmp_path, task, model_dir, monkeypatch):
    """A stage's scores are those of the weights `final/` holds: the model scored has no LoRA layer left (an
    adapter beside the base weights rounds differently under bf16 autocast: scores before the merge differed from
    the saved model's by a record or two), and `final/`, loaded again, answers every record as the run scored it."""
    from transformers import AutoModelForCausalLM, AutoProcessor

    from bioreason.recipes import pipeline
    from bioreason.training import task as task_module
    from bioreason.training.task import evaluate_splits, load_task

    scored = []
    original = task_module.evaluate_records

    def spy(model, processor, records, **kwargs):
        scored.append(any("lora_" in name for name, _ in model.named_modules()))
        return original(model, processor, records, **kwargs)

    monkeypatch.setattr(task_module, "evaluate_records", spy)
    out = tmp_path / "run"
    p, model_args, data = pipeline_args(
        tmp_path, f"output_dir: {out}\nmodel_name_or_path: {model_dir}\ndataset: {task}\nstages: [sft]\n"
        "sft_examples: 8\nmax_eval_examples: 6\nscore_test_splits: false\nevaluate_base: false\nbf16: false\n"
        "sft:\n  lora_r: 4\n  per_device_train_batch_size: 2\n  learning_rate: 0.01\n")
    metrics = pipeline.run(p, model_args, data)
    assert scored == [False]  # the SFT stage, scored once, merged
    monkeypatch.setattr(task_module, "evaluate_records", original)
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    processor = AutoProcessor.from_pretrained(out / "final")
    dataset, cells = load_task(data)
    again = evaluate_splits(model.eval(), processor, dataset, cells, data, keys=("validation",), reliance=())
    assert again["validation"]["correct"] == metrics["stages"][-1]["correct"]["validation"]
    assert again["validation"]["accuracy"] == metrics["stages"][-1]["validation"]["accuracy"]


def test_a_budget_split_end_point_skips_the_stage_it_gives_nothing(tmp_path, task, model_dir, capsys):
    """`rl_fraction: 0` is SFT alone (the budget-split study's 1:0 point): GRPO, given no prompts, is skipped and
    said to be, not started on an empty dataset; a fraction outside [0, 1] is refused before anything loads."""
    from bioreason.recipes import pipeline

    out = tmp_path / "run"
    text = (f"output_dir: {out}\nmodel_name_or_path: {model_dir}\ndataset: {task}\nstages: [sft, grpo]\n"
            "total_examples: 4\nmax_eval_examples: 3\nscore_test_splits: false\nevaluate_base: false\n"
            "bf16: false\nsft:\n  lora_r: 4\n  per_device_train_batch_size: 2\n")
    metrics = pipeline.run(*pipeline_args(tmp_path, text, "--rl_fraction", "0"))
    assert [s["name"] for s in metrics["stages"]] == ["sft"] and metrics["stages"][0]["steps"] == 2
    assert metrics["budget"]["sft_examples"] == 4 and metrics["budget"]["rl_examples"] == 0
    assert "grpo: 0 prompts in this budget; stage skipped" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"rl_fraction must lie in \[0, 1\], not 1.5"):
        pipeline.run(*pipeline_args(tmp_path, text.replace("run\n", "run2\n", 1), "--rl_fraction", "1.5"))
    assert not (tmp_path / "run2").exists()


def test_a_pipeline_that_chooses_scores_validation_only(tmp_path, task, model_dir, monkeypatch, capsys):
    """`score_test_splits: false`: every stage, the base model and the baselines are scored on validation alone (no
    record of id_test / ood_test reaches the scorer); the report, the card and run-folder checks say so."""
    from bioreason.evaluation import baselines as baseline_module
    from bioreason.recipes.pipeline import verify_run_folder
    from bioreason.training import task as task_module

    seen = []
    original = task_module.evaluate_records

    def spy(model, processor, records, **kwargs):
        seen.append(kwargs.get("desc"))
        return original(model, processor, records, **kwargs)

    monkeypatch.setattr(task_module, "evaluate_records", spy)
    splits_given = []
    original_baselines = baseline_module.baseline_scores

    def spy_baselines(model, processor, train, splits, *args, **kwargs):
        splits_given.append(set(splits))
        return original_baselines(model, processor, train, splits, *args, **kwargs)

    monkeypatch.setattr(baseline_module, "baseline_scores", spy_baselines)
    from bioreason.recipes import pipeline

    out = tmp_path / "run"
    args = pipeline_args(tmp_path, f"output_dir: {out}\nmodel_name_or_path: {model_dir}\ndataset: {task}\n"
                         "stages: [sft]\nsft_examples: 4\nmax_eval_examples: 3\nscore_test_splits: false\n"
                         "bf16: false\nsft:\n  lora_r: 4\n  per_device_train_batch_size: 2\n")
    metrics = pipeline.run(*args)
    assert seen == ["evaluate validation", "evaluate validation"]  # base, then SFT: nothing else was scored
    assert "baselines: majority validation " in capsys.readouterr().out
    assert splits_given == [{"validation"}]
    assert metrics["scored_splits"] == ["validation"]
    base, sft = metrics["stages"]
    assert sft["validation"]["n"] == 3 and sft["id"] == {} and sft["ood"] == {}
    assert set(sft["correct"]) == {"validation"} and set(sft["vs_previous"]) == {"validation"}
    for baseline in metrics["baselines"].values():
        assert "validation" in baseline and "id" not in baseline and "ood" not in baseline
    assert verify_run_folder(str(out), stages=("sft",)) == metrics
    report = (out / "report.md").read_text()
    assert "validation only" in report and "| sft vs base |" in report
    assert "validation only" in (out / "README.md").read_text()


@pytest.mark.parametrize("path", PIPELINE_CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_benchmark_pipeline_configs_parse_into_the_pipeline_fields(path):
    """Every shipped pipeline config is valid (a misspelt key, top level or in a section, is an error) and names a
    bundled benchmark."""
    from bioreason.data.benchmarks import BENCHMARKS
    from bioreason.recipes.pipeline import ARGUMENTS, check_sections
    from bioreason.training.config import parse_arguments

    p, model_args, data = parse_arguments(ARGUMENTS, ["--config", path])
    check_sections(p, model_args)
    assert data.dataset.split(":", 1)[1] in BENCHMARKS and data.balance_labels and p.bf16 == "auto"
    assert "sft" in p.stages and p.sft_examples and p.sft["lora_r"] > p.grpo["lora_r"]
    # scored on whole splits, or a fixed label-stratified subset of at least 200 records (the evaluation protocol)
    assert data.max_eval_examples is None or data.max_eval_examples >= 200


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=os.path.basename)
def test_every_study_run_config_is_a_valid_pipeline_config(path, tmp_path):
    import yaml

    from bioreason.evaluation import study
    from bioreason.recipes.pipeline import ARGUMENTS, check_sections
    from bioreason.training.config import parse_arguments

    for run in study.plan(path):
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump(run.config))
        p, model_args, data = parse_arguments(ARGUMENTS, ["--config", str(config)])
        check_sections(p, model_args)
        assert data.max_eval_examples is None or data.max_eval_examples >= 200


def pipeline_args(tmp_path, text: str, *overrides: str):
    from bioreason.recipes.pipeline import ARGUMENTS
    from bioreason.training.config import parse_arguments

    config = tmp_path / "p.yaml"
    config.write_text(text)
    return parse_arguments(ARGUMENTS, ["--config", str(config), *overrides])


def test_a_stage_section_holds_trl_and_model_config_fields_with_the_stage_defaults(tmp_path):
    from bioreason.model.precision import choose_bf16
    from bioreason.recipes.pipeline import stage_arguments

    p, model_args, _ = pipeline_args(tmp_path, "sft:\n  learning_rate: 0.001\n  lora_r: 8\ngrpo.lora_r: 2\n",
                                     "--grpo.beta", "0.1", "--sft.lora_r", "32")
    assert p.sft == {"learning_rate": 0.001, "lora_r": 32} and p.grpo == {"lora_r": 2, "beta": 0.1}
    precision = choose_bf16("false", "cpu")
    config, stage_model, _ = stage_arguments(p, model_args, "sft", precision)
    assert config.learning_rate == 0.001 and config.per_device_train_batch_size == 8 and config.seed == p.seed
    assert stage_model.use_peft and stage_model.lora_r == 32 and stage_model.projectors_trainable
    config, stage_model, recipe = stage_arguments(p, model_args, "grpo", precision)
    assert config.beta == 0.1 and config.learning_rate == 5e-5 and config.num_generations == 4
    assert stage_model.lora_r == 2 and not stage_model.projectors_trainable
    assert recipe.rewards == ["correctness", "format"]
    assert not model_args.use_peft  # the run's starting model is loaded without an adapter


def test_the_cpt_section_chooses_the_alignment_descriptions_and_they_key_the_cpt_stage(tmp_path):
    from bioreason.model.precision import choose_bf16
    from bioreason.recipes.pipeline import check_sections, resolved_sections, stage_arguments
    from bioreason.training.stage_cache import prefix_key

    precision = choose_bf16("false", "cpu")
    keys = []
    for text in ("seed: 0\n", "cpt:\n  descriptions: other\n"):
        p, model_args, _ = pipeline_args(tmp_path, text)
        check_sections(p, model_args)
        config, _, recipe = stage_arguments(p, model_args, "cpt", precision)
        assert recipe.mode == "align" and config.learning_rate == 1e-3
        keys.append((recipe.descriptions, prefix_key({"pipeline": {}}, ["cpt", "sft"], "cpt", resolved_sections(p),
                                                     {"cpt": 64, "sft": 8})))
    assert [d for d, _ in keys] == ["own", "other"] and keys[0][1] != keys[1][1]
    p, model_args, _ = pipeline_args(tmp_path, "cpt:\n  descriptions: shuffled\n")
    with pytest.raises(ValueError, match="cpt descriptions 'shuffled': own or other"):
        check_sections(p, model_args)  # before any work


@pytest.mark.parametrize(("text", "message"), [
    ("sft:\n  learnig_rate: 0.001\n", "`sft.learnig_rate` is not a sft setting; did you mean learning_rate"),
    ("grpo:\n  seed: 3\n", "`grpo.seed` is set for every stage by the pipeline; set it at the top level"),
    ("cpt:\n  lora_r: 8\n", "`cpt.lora_r` is not a cpt setting"),
    ("sft:\n  max_train_examples: 8\n", "(the budget: sft_examples / rl_examples / cpt_examples)"),
    ("lora_r: 8\n", "`lora_r` is set per stage: put it under sft: or grpo:"),
    ("sft: 8\n", "`sft` is a section of settings (a mapping), not 8"),
    ("llm_trainable: false\n", "llm_trainable: false is for the stage scripts"),
])
def test_a_misplaced_stage_setting_is_refused_before_any_work(tmp_path, text, message):
    from bioreason.recipes.pipeline import check_sections

    with pytest.raises(ValueError, match=re.escape(message)):
        check_sections(*pipeline_args(tmp_path, text)[:2])


@pytest.mark.parametrize(("override", "message"), [
    ("--sft_lora_r", "`sft_lora_r` is now `sft.lora_r`"),
    ("--grpo_prompts_per_step", "`grpo_prompts_per_step` is now `grpo.per_device_train_batch_size (prompts x"),
    ("--model_path", "`model_path` is now `model_name_or_path`"),
])
def test_a_pipeline_key_of_the_old_flat_dialect_is_refused_with_its_new_name(tmp_path, override, message):
    from bioreason.recipes.pipeline import ARGUMENTS, RENAMED
    from bioreason.training.config import parse_arguments

    config = tmp_path / "p.yaml"
    config.write_text("seed: 0\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_arguments(ARGUMENTS, ["--config", str(config), override, "4"], renamed=RENAMED)
    config.write_text(f"{override[2:]}: 4\n")  # in the file too
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_arguments(ARGUMENTS, ["--config", str(config)], renamed=RENAMED)


def test_dotted_keys_nest_into_sections_and_differences_name_the_setting():
    from bioreason.training.config import nest_dotted
    from bioreason.training.run_state import differences

    nested = nest_dotted({"sft": {"lora_r": 8, "learning_rate": 0.1}, "sft.lora_r": 16, "seed": 1},
                         [("grpo.beta", 0.1)])
    assert nested == {"sft": {"lora_r": 16, "learning_rate": 0.1}, "seed": 1, "grpo": {"beta": 0.1}}
    with pytest.raises(ValueError, match="`seed` is not a section"):
        nest_dotted({"seed": 1, "seed.x": 2})
    assert differences({"pipeline": {"sft": {"lora_r": 4}, "seed": 0}},
                       {"pipeline": {"sft": {"lora_r": 8}, "seed": 0}}) == ["pipeline.sft.lora_r"]


@pytest.mark.slow
@pytest.mark.parametrize("bf16", ["false", "true"])
def test_the_feature_cache_does_not_change_a_run(tmp_path, task, model_dir, bf16):
    """The same pipeline with a cold disk cache, the warm one it left, and no cache: the same scores and, bitwise, the
    same final weights, in fp32 and under bf16 autocast (the quickstart must not depend on what an earlier run
    cached)."""
    from bioreason.recipes.pipeline import main

    text = (f"model_name_or_path: {model_dir}\ndataset: {task}\nstages: [cpt, sft]\ncpt_examples: 4\n"
            f"sft_examples: 8\nmax_eval_examples: 3\nbf16: {bf16}\nfeature_cache_dir: {tmp_path / 'cache'}\n"
            "cpt:\n  per_device_train_batch_size: 2\nsft:\n  per_device_train_batch_size: 4\n  lora_r: 4\n")
    runs = {}
    for name, cache in (("cold", "disk"), ("warm", "disk"), ("off", "off")):
        config = tmp_path / f"{name}.yaml"
        config.write_text(text + f"output_dir: {tmp_path / name}\nfeature_cache: {cache}\n")
        runs[name] = main(["--config", str(config)])
        if name == "cold":
            assert os.listdir(tmp_path / "cache")  # the first run filled the disk cache the second reads
    scores = {name: [(s["name"], s["id"], s["ood"]) for s in m["stages"]] for name, m in runs.items()}
    assert scores["cold"] == scores["warm"] == scores["off"]
    final = {name: weights(tmp_path / name / "final") for name in runs}
    for key, value in final["cold"].items():
        assert torch.equal(value, final["warm"][key]) and torch.equal(value, final["off"][key]), key


def test_runs_that_agree_up_to_a_stage_share_it(tmp_path, task, model_dir, monkeypatch):
    """Two runs that differ only in their RL rank: the second loads the first's CPT (no adapter: its trained
    projector) and SFT (an adapter) from the stage cache instead of training them (training would raise here), and
    its GRPO ends at the weights of a run without the cache."""
    from bioreason.recipes import cpt, pipeline, sft

    text = (f"model_name_or_path: {model_dir}\ndataset: {task}\nstages: [cpt, sft, grpo]\ncpt_examples: 2\n"
            "sft_examples: 4\ncpt:\n  per_device_train_batch_size: 2\n"
            "rl_examples: 2\nmax_eval_examples: 2\nbf16: false\nevaluate_base: false\n"
            "sft:\n  per_device_train_batch_size: 2\n  lora_r: 4\n  learning_rate: 0.01\n"
            "grpo:\n  num_generations: 2\n  per_device_train_batch_size: 2\n  max_completion_length: 4\n")

    def run(name: str, extra: str) -> dict:
        config = tmp_path / f"{name}.yaml"
        config.write_text(text + f"output_dir: {tmp_path / name}\n" + extra)
        return pipeline.main(["--config", str(config)])

    cache = f"stage_cache: {tmp_path / 'stages'}\n"
    first = run("first", cache + "grpo.lora_r: 2\n")
    plain = run("plain", "grpo.lora_r: 4\n")

    def no_training(*args, **kwargs):
        raise AssertionError("SFT trained again although an identical SFT was in the stage cache")

    monkeypatch.setattr(sft, "run", no_training)
    monkeypatch.setattr(cpt, "run", no_training)
    second = run("second", cache + "grpo.lora_r: 4\n")
    for i, stage in enumerate(("cpt", "sft")):
        shared = second["stages"][i]
        assert shared.pop("shared_from").startswith(str(tmp_path / "stages" / f"{stage}-"))
        assert shared == first["stages"][i]  # the record the first run wrote, its training time included
        assert {**shared, "seconds": 0} == {**plain["stages"][i], "seconds": 0}
        assert "shared_from" not in first["stages"][i]
    assert second["stages"][2]["name"] == "grpo" and second["stages"][2]["id"] == plain["stages"][2]["id"]
    stored = sorted(name for name in os.listdir(tmp_path / "stages") if not name.endswith(".lock"))
    assert [name.split("-")[0] for name in stored] == ["cpt", "sft"]  # the runs' last stage (GRPO) is not kept
    entries = {name.split("-")[0]: tmp_path / "stages" / name for name in stored}
    # CPT trains its projector without an adapter: that alone is stored; SFT stores its adapter
    assert (entries["cpt"] / "trained.safetensors").exists() and not os.path.exists(entries["cpt"] / "adapter")
    assert os.path.exists(entries["sft"] / "adapter" / "adapter_model.safetensors")
    assert not any(name.endswith(".bin") or name == "model" for entry in entries.values()
                   for name in os.listdir(entry))  # no merged model, nothing pickled
    final, expected = weights(tmp_path / "second" / "final"), weights(tmp_path / "plain" / "final")
    assert final.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(final[key], value), key


def test_a_stage_is_shared_only_by_runs_that_agree_up_to_it():
    """The SFT key ignores every later setting and the RL budget; it follows SFT's own settings and budget, and a
    default spelled out equals the default left out."""
    from bioreason.evaluation.scoring import SCORING_VERSION
    from bioreason.recipes.pipeline import PipelineArguments, resolved_sections, stage_budgets
    from bioreason.training.arguments import DataArguments, ModelArguments
    from bioreason.training.run_state import config_key
    from bioreason.training.stage_cache import prefix_key

    def key(stage: str, **fields) -> dict:
        p = PipelineArguments(**{"stages": ["sft", "grpo"], "sft_examples": 64, "rl_examples": 8, **fields})
        n_sft, n_rl = stage_budgets(p)
        return prefix_key(config_key(p, ModelArguments(), DataArguments()), p.stages, stage, resolved_sections(p),
                          {"cpt": p.cpt_examples, "sft": n_sft, "grpo": n_rl})

    base = key("sft")
    assert key("sft", grpo={"lora_r": 16}, rl_examples=32, output_dir="elsewhere", stage_cache="x") == base
    assert key("sft", sft={"lora_r": 16}) == base  # 16 is SFT's default rank
    assert key("sft", sft={"lora_r": 64}) != base
    assert key("sft", sft_examples=128) != base
    assert key("sft", seed=1) != base
    assert key("grpo", grpo={"lora_r": 16}) != key("grpo")
    with mock.patch("bioreason.training.stage_cache.SCORING_VERSION", SCORING_VERSION + 1):
        assert key("sft") != base  # scores from an older scoring are not served


def test_a_stage_cache_entry_serves_only_a_whole_entry_of_its_own_key(tmp_path):
    from bioreason.training.stage_cache import StageCache

    model, _ = tiny_model("antiberty", projector="mean")
    cache = StageCache(str(tmp_path))
    with cache.hold("sft", {"a": 1}) as entry:
        assert entry.load() is None
        entry.store_changes(model)
        entry.store_record({"name": "sft"}, [{"stage": "sft", "step": 1}])
    with cache.hold("sft", {"a": 1}) as entry:
        assert entry.load() == {"key": {"a": 1}, "record": {"name": "sft"}, "curve": [{"stage": "sft", "step": 1}]}
        os.remove(entry.record_path)  # a store killed before its record: not served, trained again
        assert entry.load() is None
        entry.store_changes(model)
        entry.store_record({"name": "sft"}, [])
    moved = cache.entry("sft", {"a": 2})
    os.replace(cache.entry("sft", {"a": 1}), moved)  # an entry under another config's name
    with cache.hold("sft", {"a": 2}) as entry, pytest.raises(ValueError, match="written for another config"):
        entry.load()


def test_a_stage_cache_entry_holds_the_stage_changes_and_rebuilds_the_merged_model_bitwise(tmp_path):
    """An adapter stage stores its adapter (projector included), not the model; a stage without an adapter stores
    only what it trained; applied to the stage's starting model, either gives the trained run's merged weights."""
    from bioreason.training.arguments import ModelArguments
    from bioreason.training.prepare import prepare_model
    from bioreason.training.stage_cache import StageCache

    torch.manual_seed(0)
    start, _ = tiny_model("antiberty", projector="mean")
    start_weights = {k: v.clone() for k, v in start.state_dict().items()}
    trained = prepare_model(start, ModelArguments(use_peft=True, lora_r=4, feature_cache="off"))
    with torch.no_grad():  # stand-in for a stage's training: every trainable tensor moves
        for param in trained.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
    cache = StageCache(str(tmp_path))
    with cache.hold("sft", {"a": 1}) as entry:
        entry.store_changes(trained)
        assert os.path.isdir(entry.adapter_path) and not os.path.exists(entry.trained_path)
        merged = trained.merge_and_unload()
        fresh, _ = tiny_model("antiberty", projector="mean")
        fresh.load_state_dict(start_weights)
        rebuilt = entry.apply(fresh)
    expected, got = merged.state_dict(), rebuilt.state_dict()
    assert expected.keys() == got.keys()
    assert any(not torch.equal(expected[k], start_weights[k]) for k in expected)  # the stage changed weights
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key
    # no adapter (CPT align trains the projector alone): only the trained parameters are stored
    after_sft = {k: v.clone() for k, v in merged.state_dict().items()}  # the next stage starts here
    for name, param in merged.named_parameters():
        param.requires_grad_(name.startswith("model.projectors."))
    with torch.no_grad():
        for param in merged.parameters():
            if param.requires_grad:
                param.add_(1.0)
    with cache.hold("cpt", {"a": 1}) as entry:
        entry.store_changes(merged)
        assert not os.path.isdir(entry.adapter_path)
        size = os.path.getsize(entry.trained_path)
        assert size < sum(p.numel() * 4 for p in merged.parameters()) / 4  # the projector, not the model
        fresh.load_state_dict(after_sft)
        rebuilt = entry.apply(fresh)
    for name, value in merged.state_dict().items():
        assert torch.equal(value, rebuilt.state_dict()[name]), name


def fake_grpo_trainer(generations: int = 2):
    """The dynamic-sampling selection alone: a BioGRPOTrainer without a model, holding what the selection reads."""
    from collections import defaultdict

    from bioreason.training.grpo_trainer import BioGRPOTrainer

    trainer = object.__new__(BioGRPOTrainer)
    trainer.num_generations = generations
    trainer.sampling_record = {"groups_generated": 0, "groups_with_advantage": 0, "groups_dropped": 0,
                               "repeated_groups": 0, "skipped_steps": 0}
    trainer._metrics = {"train": defaultdict(list)}
    return trainer


def generated(advantages: list[float]) -> dict:
    rows = len(advantages)
    return {"prompt_ids": torch.arange(rows)[:, None].repeat(1, 3), "completion_ids": torch.arange(rows)[:, None],
            "completion_mask": torch.tensor([[1, 1, 0]] * rows), "advantages": torch.tensor(advantages),
            "num_items_in_batch": torch.tensor(99), "protein_values": torch.zeros(rows, 1, 5)}


def test_dynamic_sampling_keeps_the_groups_with_advantage_and_recounts_the_tokens():
    trainer = fake_grpo_trainer()
    # 4 groups of 2 samples: groups 0 and 2 have all-equal rewards (zero advantage), 1 and 3 do not; 2 are needed
    kept = trainer._keep_groups_with_advantage(generated([0, 0, 1, -1, 0, 0, -1, 1]), rows=8, groups=2)
    assert kept["completion_ids"].flatten().tolist() == [2, 3, 6, 7]
    assert kept["prompt_ids"].shape == (4, 3) and kept["protein_values"].shape == (4, 1, 5)
    assert (kept["advantages"].view(-1, 2) != 0).any(-1).all()
    assert int(kept["num_items_in_batch"]) == 8  # 4 rows x 2 completion tokens, not the 99 of the whole draw
    assert trainer.sampling_record == {"groups_generated": 4, "groups_with_advantage": 2, "groups_dropped": 2,
                                       "repeated_groups": 0, "skipped_steps": 0}


def test_dynamic_sampling_fills_a_short_batch_by_repeating_groups_with_advantage_never_with_groups_without():
    trainer = fake_grpo_trainer()
    kept = trainer._keep_groups_with_advantage(generated([0, 0, 0, 0, 1, -1]), rows=6, groups=2)
    assert kept["completion_ids"].flatten().tolist() == [4, 5, 4, 5]  # the one group with advantage, twice
    assert int(kept["num_items_in_batch"]) == 8  # the repeat's tokens counted: it weighs as two groups
    assert trainer.sampling_record["repeated_groups"] == 1
    kept = trainer._keep_groups_with_advantage(generated([0, 0, 0, 0]), rows=4, groups=1)
    # no group has advantage: the first groups, left for the step to skip, and nothing counted as repeated
    assert kept["completion_ids"].flatten().tolist() == [0, 1] and trainer.sampling_record["repeated_groups"] == 1
    assert trainer._metrics["train"]["dynamic_sampling/groups_with_advantage"] == [1 / 3, 0.0]


@pytest.fixture
def prompt_dependent_reward():
    """Rewards that differ between samples for 'heavy' prompts only: groups of 'light' prompts have no advantage."""
    def reward(completions, answer, **_):
        return [float(len(str(c)) % 3) if a == "heavy" else 1.0 for c, a in zip(completions, answer, strict=True)]

    register_reward("test_heavy_only")(reward)
    yield "test_heavy_only"
    REWARDS.pop("test_heavy_only")


def test_grpo_with_dynamic_sampling_trains_on_groups_with_advantage_only(tmp_path, task, model_dir,
                                                                         prompt_dependent_reward, monkeypatch):
    from bioreason.recipes import grpo

    batches = []
    original = grpo.BioGRPOTrainer._keep_groups_with_advantage

    def spy(self, output, rows, groups):
        kept = original(self, output, rows, groups)
        batches.append(kept["advantages"].view(-1, self.num_generations))
        return kept

    monkeypatch.setattr(grpo.BioGRPOTrainer, "_keep_groups_with_advantage", spy)
    result = grpo.main(["--model_name_or_path", model_dir, "--dataset", task, "--max_train_examples", "16",
                        "--max_eval_examples", "2", "--output_dir", str(tmp_path / "out"),
                        "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_steps", "2",
                        "--max_completion_length", "6", "--learning_rate", "1e-2", "--gradient_checkpointing",
                        "false", "--rewards", prompt_dependent_reward, "--dynamic_sampling", "4", "--evaluate",
                        "false", "--llm_trainable", "false", *CPU])
    assert result["steps"] == 2 and len(batches) == 2 and all(b.shape == (2, 2) for b in batches)
    record = result["dynamic_sampling"]
    assert record["groups_generated"] == 16 and record["groups_dropped"] == 12  # 4 x 2 groups drawn per step
    # every batch that had a group with advantage is all groups with advantage (repeats fill it); the others skip
    for b in batches:
        assert bool((b != 0).any(-1).all()) or not bool((b != 0).any())
    assert record["skipped_steps"] == sum(not bool((b != 0).any()) for b in batches)
    assert record["groups_with_advantage"] > 0


@pytest.fixture
def spread_once_reward():
    """Rewards with a spread on the first generation only; every later draw scores all rollouts alike (no advantage)."""
    calls = []

    def reward(completions, **_):
        calls.append(len(completions))
        return [float(i % 2) if len(calls) == 1 else 1.0 for i in range(len(completions))]

    register_reward("test_spread_once")(reward)
    yield "test_spread_once"
    REWARDS.pop("test_spread_once")


def test_grpo_step_whose_draw_has_no_advantage_is_skipped_and_moves_nothing(tmp_path, task, model_dir,
                                                                            spread_once_reward):
    """Step 1 learns from its groups; step 2's whole draw has no advantage, so it skips the loss pass and the update:
    the weights after step 2 equal those after step 1 (a zero gradient would still move them by Adam's momentum)."""
    from bioreason.recipes import grpo

    result = grpo.main(["--model_name_or_path", model_dir, "--dataset", task, "--max_train_examples", "16",
                        "--max_eval_examples", "2", "--output_dir", str(tmp_path / "out"),
                        "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_steps", "2",
                        "--save_strategy", "steps", "--save_steps", "1", "--max_completion_length", "6",
                        "--learning_rate", "1e-2", "--gradient_checkpointing", "false", "--rewards",
                        spread_once_reward, "--dynamic_sampling", "2", "--stop_when_solved", "0", "--evaluate",
                        "false", "--llm_trainable", "false", *CPU])
    assert result["steps"] == 2 and result["dynamic_sampling"]["skipped_steps"] == 1
    assert result["dynamic_sampling"]["repeated_groups"] == 0  # step 1: every group drawn had a spread
    start = weights(model_dir)
    one, two = weights(tmp_path / "out" / "checkpoint-1"), weights(tmp_path / "out" / "checkpoint-2")
    assert changed(start, one, "model.projectors.")  # step 1 trained the projector
    for key in one:
        assert torch.equal(one[key], two[key]), key


def test_grpo_with_dynamic_sampling_killed_midway_resumes_to_the_uninterrupted_draws(tmp_path, task, model_dir,
                                                                                     prompt_dependent_reward,
                                                                                     monkeypatch):
    """The extra prompts come from the trainer's own generator: a resumed stage restores its state from the
    checkpoint, so steps 3-4 draw what the uninterrupted stage drew (the weights match) and the counts cover all 4."""
    from bioreason.recipes import grpo

    argv = ["--model_name_or_path", model_dir, "--dataset", task, "--max_train_examples", "16",
            "--max_eval_examples", "2", "--per_device_train_batch_size", "4", "--num_generations", "2",
            "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--max_completion_length", "6",
            "--learning_rate", "1e-2", "--gradient_checkpointing", "false", "--rewards", prompt_dependent_reward,
            "--dynamic_sampling", "4", "--stop_when_solved", "0", "--evaluate", "false", "--use_peft", "true",
            "--lora_r", "4", *CPU]
    full = grpo.main([*argv, "--output_dir", str(tmp_path / "full")])
    assert full["dynamic_sampling"]["groups_generated"] == 32  # 4 steps x 2 groups x 4 draws

    killed_at_step_3(monkeypatch, grpo.BioGRPOTrainer,
                     lambda: grpo.main([*argv, "--output_dir", str(tmp_path / "killed")]))
    checkpoint = tmp_path / "killed" / "checkpoint-2"
    saved = json.loads((checkpoint / grpo.BioGRPOTrainer.DRAWS_FILE).read_text())
    assert saved["record"]["groups_generated"] == 16
    resumed = grpo.main([*argv, "--output_dir", str(tmp_path / "killed"), "--resume", "true"])
    assert resumed["dynamic_sampling"] == full["dynamic_sampling"]
    a, b = weights(tmp_path / "full" / "final"), weights(tmp_path / "killed" / "final")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key

    (checkpoint / grpo.BioGRPOTrainer.DRAWS_FILE).unlink()  # a checkpoint without the draw state is refused, named
    for name in os.listdir(tmp_path / "killed"):
        if name.startswith("checkpoint-") and name != "checkpoint-2":
            shutil.rmtree(tmp_path / "killed" / name)
    (tmp_path / "killed" / "metrics.json").unlink(missing_ok=True)
    shutil.rmtree(tmp_path / "killed" / "final")
    with pytest.raises(FileNotFoundError, match="checkpoint-2: no dynamic_sampling.json"):
        grpo.main([*argv, "--output_dir", str(tmp_path / "killed"), "--resume", "true"])


def test_curve_splits_score_ood_along_sft_and_a_choosing_run_refuses_them(tmp_path, task, model_dir):
    """`curve_splits: [validation, ood]` puts OOD beside validation at every periodic point (to see an OOD peak
    along SFT), the last point being the stage's own scores; a run that leaves its test splits unread refuses them."""
    from bioreason.evaluation.study import curve_rows
    from bioreason.recipes import pipeline

    text = (f"model_name_or_path: {model_dir}\ndataset: {task}\nstages: [sft]\nsft_examples: 8\n"
            "max_eval_examples: 3\nbf16: false\nevaluate_base: false\neval_every_steps: 1\nreliance: none\n"
            "sft:\n  per_device_train_batch_size: 4\n  lora_r: 4\n")
    config = tmp_path / "curve.yaml"
    config.write_text(text + f"output_dir: {tmp_path / 'run'}\ncurve_splits: [validation, ood]\n")
    metrics = pipeline.main(["--config", str(config)])
    sft = metrics["stages"][0]
    points = metrics["curve"]
    assert [c["step"] for c in points] == list(range(1, sft["steps"] + 1)) and len(points) == 2
    assert all(set(c) == {"stage", "step", "validation", "ood"} for c in points)
    assert all(c["ood"]["n"] == 3 and 0 <= c["ood"]["accuracy"] <= 1 for c in points)
    # each point keeps its per-record vectors, so two points of the run compare paired (`curve_pairs`)
    assert all(len(c[k]["correct"]) == c[k]["n"] and sum(c[k]["correct"]) / c[k]["n"] == c[k]["accuracy"]
               for c in points for k in ("validation", "ood"))
    last = {k: {m: v for m, v in points[-1][k].items() if m != "correct"} for k in ("validation", "ood")}
    assert last["ood"] == sft["ood"] and last["validation"] == sft["validation"]
    assert points[-1]["ood"]["correct"] == sft["correct"]["ood"]
    rows = curve_rows(str(tmp_path / "run"), "run", metrics)
    assert [r["ood_accuracy"] for r in rows] == [c["ood"]["accuracy"] for c in points]
    assert all(r["id_accuracy"] is None for r in rows)  # not asked for: not scored

    choosing = tmp_path / "choosing.yaml"
    choosing.write_text(text + f"output_dir: {tmp_path / 'choose'}\ncurve_splits: [validation, ood]\n"
                        "score_test_splits: false\n")
    with pytest.raises(ValueError, match="score_test_splits is false"):
        pipeline.main(["--config", str(choosing)])
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(text + f"output_dir: {tmp_path / 'unknown'}\ncurve_splits: [ood]\n")
    with pytest.raises(ValueError, match="must hold validation"):
        pipeline.main(["--config", str(unknown)])
    assert not (tmp_path / "choose").exists() and not (tmp_path / "unknown").exists()


def test_scoring_along_the_way_leaves_the_trained_model_as_it_was(tmp_path, task, model_dir):
    """A seeds run scores the base model and validation every few SFT steps; a choosing run does neither. The same
    config must train the same model either way, or the choosing study and the seeds row would not be one config
    (the jaspar seeds read 1 record apart from the choosing runs at the same seed)."""
    from bioreason.recipes import pipeline

    text = (f"model_name_or_path: {model_dir}\ndataset: {task}\nstages: [sft]\nsft_examples: 12\n"
            "max_eval_examples: 3\nbf16: false\nreliance: none\nsave_model: true\n"
            "sft:\n  per_device_train_batch_size: 4\n  lora_r: 4\n")
    quiet, scoring = tmp_path / "quiet.yaml", tmp_path / "scoring.yaml"
    quiet.write_text(text + f"output_dir: {tmp_path / 'quiet'}\nevaluate_base: false\n")
    scoring.write_text(text + f"output_dir: {tmp_path / 'scoring'}\nevaluate_base: true\neval_every_steps: 1\n")
    pipeline.main(["--config", str(quiet)])
    metrics = pipeline.main(["--config", str(scoring)])
    assert len(metrics["curve"]) == 3  # it did score along the way
    a, b = weights(tmp_path / "quiet" / "final"), weights(tmp_path / "scoring" / "final")
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
