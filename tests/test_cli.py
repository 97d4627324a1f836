"""The command line explains itself: `run STAGE --help` lists every config field with type, default and help,
`--print-config` shows the resolved config without running anything."""

from __future__ import annotations

import os

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
