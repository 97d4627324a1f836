"""Precision follows the hardware: `bf16: auto` picks bf16 autocast only where the device computes bf16 natively, with
the CPU capability lookup faked both ways; an explicit `bf16: true` on a CPU without it warns with the slowdown."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from bioreason.model import precision
from bioreason.model.precision import choose_bf16, cpu_native_bf16, parse_bf16

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AVX2_EPYC = {"architecture": "x86_64", "avx2": True, "avx512_bf16": False, "amx_bf16": False}
AMX_XEON = {"architecture": "x86_64", "avx2": True, "avx512_bf16": True, "amx_bf16": True}
ZEN5_EPYC = {"architecture": "x86_64", "avx2": True, "avx512_bf16": True, "amx_bf16": False}
GRAVITON3 = {"architecture": "aarch64", "sve": True, "sve_bf16": True}
APPLE_M2 = {"architecture": "aarch64", "bf16": True}


@pytest.fixture
def fake_cpu(monkeypatch):
    def set_caps(caps: dict):
        monkeypatch.setattr(precision, "cpu_capabilities", lambda: dict(caps))

    return set_caps


@pytest.mark.parametrize(("caps", "native"), [(AVX2_EPYC, False), (AMX_XEON, True), (ZEN5_EPYC, True),
                                              (GRAVITON3, True), (APPLE_M2, False), ({}, False)])
def test_cpu_native_bf16_from_capabilities(caps, native):
    assert cpu_native_bf16(caps)[0] is native


def test_auto_is_fp32_without_native_bf16_and_bf16_with_it(fake_cpu):
    fake_cpu(AVX2_EPYC)
    chosen = choose_bf16("auto", "cpu")
    assert chosen.bf16 is False and chosen.requested == "auto" and "no native bf16" in chosen.reason
    fake_cpu(AMX_XEON)
    chosen = choose_bf16("auto", "cpu")
    assert chosen.bf16 is True and "AMX-BF16" in chosen.reason
    assert chosen.as_dict()["precision"] == "bf16 autocast"


def test_explicit_values_are_honoured(fake_cpu):
    fake_cpu(AMX_XEON)
    assert choose_bf16(False, "cpu").bf16 is False
    assert choose_bf16("false", "cpu").requested == "false"
    fake_cpu(AVX2_EPYC)
    assert choose_bf16("true", "cpu").bf16 is True


def test_explicit_bf16_on_cpu_without_it_warns_with_measured_slowdown(fake_cpu, caplog):
    fake_cpu(AVX2_EPYC)
    with caplog.at_level(logging.WARNING, logger="bioreason.model.precision"):
        choose_bf16(True, "cpu")
    text = caplog.text
    assert "without native bf16" in text and "GFLOP/s in bf16" in text and "slower" in text
    caplog.clear()
    fake_cpu(AMX_XEON)
    with caplog.at_level(logging.WARNING, logger="bioreason.model.precision"):
        choose_bf16(True, "cpu")
    assert caplog.text == ""


@pytest.mark.parametrize("bad", ["maybe", "bf17", 2])
def test_bad_bf16_values_are_errors(bad):
    with pytest.raises(ValueError, match="bf16 must be auto, true or false"):
        parse_bf16(bad)


def test_recipe_configs_resolve_auto_by_hardware(fake_cpu, tmp_path):
    from bioreason.training.arguments import BioGRPOConfig, BioSFTConfig, precision_record

    for cls in (BioSFTConfig, BioGRPOConfig):
        fake_cpu(AVX2_EPYC)
        config = cls(output_dir=str(tmp_path), use_cpu=True)
        assert config.bf16 is False and precision_record(config)["requested"] == "auto"
        fake_cpu(ZEN5_EPYC)
        config = cls(output_dir=str(tmp_path), use_cpu=True)
        assert config.bf16 is True and precision_record(config)["precision"] == "bf16 autocast"


def test_shipped_configs_default_to_auto(fake_cpu):
    """Every config the project ships (quickstart, stage configs, the CPU study) leaves precision to the hardware."""
    import yaml

    from bioreason.recipes.pipeline import PipelineArguments

    assert PipelineArguments().bf16 == "auto"
    configs = []
    for folder, _, files in os.walk(os.path.join(ROOT, "recipes", "configs")):
        configs += [os.path.join(folder, f) for f in files if f.endswith(".yaml")]
    for path in configs:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
        values = [config.get("bf16"), (config.get("base") or {}).get("bf16")]
        assert True not in values and False not in values, path
    fake_cpu(AVX2_EPYC)
    assert choose_bf16(PipelineArguments().bf16, "cpu").bf16 is False
    fake_cpu(AMX_XEON)
    assert choose_bf16(PipelineArguments().bf16, "cpu").bf16 is True


def test_eval_records_precision(fake_cpu, tmp_path):
    from conftest import tiny_model

    from bioreason.data.benchmarks import build_benchmark
    from bioreason.evaluation.evaluate import evaluate_model

    model, processor = tiny_model("antiberty", projector="mean")
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    build_benchmark("antibody_chain", str(tmp_path / "task"))
    fake_cpu(AVX2_EPYC)
    out = evaluate_model(str(tmp_path / "m"), str(tmp_path / "task"), splits=("id_test",), max_examples=2)
    assert out["precision"]["bf16"] is False and out["precision"]["requested"] == "auto"
    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("sharding", [{"fsdp": "full_shard auto_wrap", "fsdp_config": {"version": 2}},
                                      {"deepspeed": "recipes/accelerate/zero2.yaml"}])
def test_sharding_on_cpu_is_refused_rather_than_run_as_ddp(tmp_path, sharding):
    """accelerate drops FSDP (and DeepSpeed) on CPU processes and wraps the model in DDP without a word; a config
    that asks for sharding on CPU is an error that says so."""
    from bioreason.training.arguments import BioGRPOConfig, BioSFTConfig

    for config in (BioSFTConfig, BioGRPOConfig):
        with pytest.raises(ValueError, match="GPUs only .* DDP instead"):
            config(output_dir=str(tmp_path), use_cpu=True, report_to="none", **sharding)
    BioSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none")  # unsharded CPU runs are fine
