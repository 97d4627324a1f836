"""The command line explains itself: `run STAGE --help` lists every config field with type, default and help,
`--print-config` shows the resolved config without running anything."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from bioreason.cli import RECIPES, config_fields, main


@pytest.mark.parametrize("recipe", RECIPES)
def test_run_help_lists_every_config_field(recipe, capsys):
    assert main(["run", recipe, "--help"]) == 0
    text = capsys.readouterr().out
    fields = config_fields(recipe)
    assert len(fields) > 10
    for _, f in fields:
        assert f"\n  {f.name} (" in text, f.name
    if recipe != "pipeline":
        assert "\n  use_peft (bool, default False)\n" in text and "\n  lora_r (int, default 16)\n" in text
        assert "\n  max_train_examples (int | None, default None)\n" in text
    assert "\n  bf16 (str, default 'auto')\n      auto (default)" in text


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_bioreason_field_has_help(recipe):
    """TRL documents its fields; ours must too, or --help shows a bare name."""
    own = [(owner.__name__, f.name) for owner, f in config_fields(recipe) if not f.metadata.get("help")
           and owner.__name__ in {"PipelineArguments", "ModelArguments", "DataArguments"}
           | {f"{recipe.upper()}RecipeArguments"}]
    assert not own


def test_print_config_shows_the_resolved_config_and_runs_nothing(tmp_path, capsys):
    config = tmp_path / "sft.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\nlora_r: 4\nuse_cpu: true\nbf16: false\n")
    assert main(["run", "sft", "--config", str(config), "--print-config", "lora_r=8", "max_train_examples=32"]) == 0
    text = capsys.readouterr().out
    resolved = yaml.safe_load(text)  # one mapping: every field once, the overrides applied
    assert resolved["lora_r"] == 8 and resolved["max_train_examples"] == 32 and resolved["bf16"] is False
    assert resolved["learning_rate"] == 2e-5 and resolved["dataset"] == "benchmark:antibody_chain"
    assert "# bf16 resolved: fp32" in text
    assert not (tmp_path / "out").exists()
    names = {f.name for _, f in config_fields("sft")}
    assert set(resolved) == names


def test_run_without_config_says_how_to_get_help(capsys):
    assert main(["run", "grpo"]) == 2
    assert "bioreason run grpo --help" in capsys.readouterr().err


def test_print_config_of_a_pipeline_shows_each_stage_section_with_its_defaults(capsys):
    quickstart = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "configs",
                              "quickstart.yaml")
    assert main(["run", "pipeline", "--config", quickstart, "--print-config", "sft.lora_r=64", "grpo.beta=0.04"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["sft"]["lora_r"] == 64 and resolved["sft"]["learning_rate"] == 0.0005  # override, then the file
    assert resolved["grpo"]["beta"] == 0.04 and resolved["grpo"]["lora_r"] == 4
    assert resolved["grpo"]["projectors_trainable"] is False and resolved["cpt"]["per_device_train_batch_size"] == 8


def test_run_help_without_a_recipe_lists_the_recipes(capsys):
    for argv, code in ((["run", "--help"], 0), (["run", "-h"], 0), (["run"], 2)):
        assert main(argv) == code
        text = capsys.readouterr().out
        assert all(f"\n  {recipe} " in text for recipe in RECIPES), argv


def test_run_help_shows_bioreason_settings_before_trls(capsys):
    assert main(["run", "sft", "--help"]) == 0
    text = capsys.readouterr().out
    ours, theirs = text.index("== bioreason's settings =="), text.index("== TRL / transformers settings")
    assert ours < text.index("\n  max_train_examples (") < theirs  # DataArguments: ours
    assert ours < text.index("\n  feature_cache (") < theirs  # declared by our ModelArguments
    assert ours < text.index("\n  bf16 (str, default 'auto')") < theirs  # redeclared by us
    assert theirs < text.index("\n  lora_r (") and theirs < text.index("\n  warmup_steps (")  # TRL's / transformers'


def test_list_overrides_are_written_as_in_yaml_and_unknown_stages_refused_as_the_run_would(capsys):
    quickstart = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "configs",
                              "quickstart.yaml")
    assert main(["run", "pipeline", "--config", quickstart, "--print-config", "stages=[sft, grpo]",
                 "encoders=[rna=scanpy_pca:runs/data/x]"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["stages"] == ["sft", "grpo"] and resolved["encoders"] == ["rna=scanpy_pca:runs/data/x"]
    assert main(["run", "pipeline", "--config", quickstart, "--print-config", "stages=sft"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["stages"] == ["sft"]
    assert main(["run", "pipeline", "--config", quickstart, "--print-config", "stages=[sft, rl]"]) == 2
    assert "unknown stages ['rl'] in stages ['sft', 'rl']; available: cpt, sft, grpo" in one_error_line(capsys)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[:2000]
    return lines[0]


def test_print_config_refuses_what_the_run_refuses(capsys):
    quickstart = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "configs",
                              "quickstart.yaml")
    assert main(["run", "pipeline", "--config", quickstart, "--print-config", "sft.lora_rank=8"]) == 2
    line = one_error_line(capsys)
    assert "`sft.lora_rank` is not a sft setting; did you mean" in line and "lora_r" in line
    assert main(["run", "pipeline", "--config", quickstart, "--print-config", "sft.learning_rate=fast"]) == 2
    assert "learning_rate" in one_error_line(capsys)


def test_a_wrong_override_is_one_line_with_a_suggestion(tmp_path, capsys):
    config = tmp_path / "sft.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\nuse_cpu: true\n")
    assert main(["run", "sft", "--config", str(config), "lora_r=abc"]) == 2
    line = one_error_line(capsys)
    assert "argument --lora_r" in line and "invalid int value: 'abc'" in line and "usage" not in line
    assert main(["run", "sft", "--config", str(config), "lora_rank=8"]) == 2
    assert "did you mean" in one_error_line(capsys) and not (tmp_path / "out").exists()


def test_an_error_is_one_line_unless_debug_asks_for_the_traceback(tmp_path, capsys, monkeypatch):
    from bioreason.cli import main

    missing = str(tmp_path / "nothing.yaml")
    assert main(["run", "sft", "--config", missing]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--debug shows the traceback" in err and "nothing.yaml" in err
    with pytest.raises(OSError, match="nothing.yaml"):
        main(["--debug", "run", "sft", "--config", missing])
    monkeypatch.setenv("BIOREASON_DEBUG", "1")
    with pytest.raises(OSError, match="nothing.yaml"):
        main(["run", "sft", "--config", missing])


def test_every_build_option_reaches_build_task(tmp_path, monkeypatch):
    """`data build` fills `BuildOptions` from its fields: every field, set on the command line to a value other than
    its default, arrives in the options `build_task` gets (lists comma-separated, the alphabet policy too)."""
    import dataclasses

    import bioreason.data
    from bioreason.data import AlphabetPolicy, BuildOptions

    seen = {}
    monkeypatch.setattr(bioreason.data, "build_task", lambda opts: seen.setdefault("opts", opts) and {})
    monkeypatch.setattr("bioreason.cli.print_summary", lambda path, summary: None)
    given = {"modality": "protein", "label_column": "y", "out": str(tmp_path / "o"), "task": "t", "fasta": "a.fa",
             "labels": "l.csv", "table": "t.csv", "h5ad": "c.h5ad", "id_column": "name", "sequence_column": "seq",
             "group_column": "g", "reasoning_column": "r", "question": "Which? <protein>", "label_set": "a,b",
             "split_column": "s", "ood_values": "x,y", "id_test_fraction": "0.3", "validation_fraction": "0.2",
             "seed": "3", "max_length": "9", "gene_vocab": "v.json"}
    flags = ["skip_unlabeled", "drop_leaked", "use_raw"]
    policy = {"iupac": "to_n", "ambiguous": "to_x", "lowercase": "error"}
    argv = ["data", "build"]
    for name, value in {**given, **policy}.items():
        argv += [f"--{name.replace('_', '-')}", value]
    argv += [f"--{name.replace('_', '-')}" for name in flags]
    assert main(argv) == 0
    opts = seen["opts"]
    names = {f.name for f in dataclasses.fields(BuildOptions)}
    assert names == {*given, *flags, "policy"}  # a field without an option fails here
    defaults = BuildOptions(modality="dna", label_column="z", out="-")
    for name in names - {"modality", "label_column", "out"}:
        assert getattr(opts, name) != getattr(defaults, name), name
    assert opts.label_set == ["a", "b"] and opts.ood_values == ["x", "y"] and opts.seed == 3
    assert opts.policy == AlphabetPolicy(**policy) and opts.skip_unlabeled and opts.use_raw


def test_pipeline_section_numbers_are_typed_and_wrong_kinds_refused():
    """YAML 1.1 reads `1e-4` as a string; a section's numbers reach the trainer as numbers, and a value of the wrong
    kind is refused before any work."""
    from bioreason.recipes.pipeline import PipelineArguments, check_sections
    from bioreason.training.arguments import ModelArguments

    p = PipelineArguments(sft={"learning_rate": "1e-4", "lora_r": "8", "num_train_epochs": 2, "packing": True})
    check_sections(p, ModelArguments())
    assert p.sft == {"learning_rate": 1e-4, "lora_r": 8, "num_train_epochs": 2.0, "packing": True}
    assert type(p.sft["learning_rate"]) is float and type(p.sft["lora_r"]) is int
    for section, problem in (({"lora_r": "8.5"}, "`sft.lora_r` must be an int, not '8.5'"),
                             ({"learning_rate": "fast"}, "`sft.learning_rate` must be a float, not 'fast'"),
                             ({"packing": "yes"}, "`sft.packing` must be a bool, not 'yes'"),
                             ({"lora_r": True}, "`sft.lora_r` must be an int, not True")):
        with pytest.raises(ValueError, match=re.escape(problem)):
            check_sections(PipelineArguments(sft=section), ModelArguments())
