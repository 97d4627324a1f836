"""Precision chosen by the hardware: bf16 autocast where the device computes bf16 natively, fp32 elsewhere.

Why: a hard-coded `bf16: true` is several times faster than fp32 on a CPU with AMX or AVX512-BF16 and 100x+ slower on
one without (AVX2-only x86, most laptops): there torch emulates bf16 matmuls in scalar code. Measured with torch 2.13,
2 threads: a 2048^3 matmul runs at 0.3 GFLOP/s in bf16 against 142 in fp32 on an AVX2 EPYC, and at 855 against 160 on
an EPYC with AVX512-BF16. So every recipe, the pipeline, `bioreason eval` and `make bench` default to `bf16: auto`.

The decision (`choose_bf16`) reads the device's capability, never a benchmark:
- CUDA: `torch.cuda.is_bf16_supported(including_emulation=False)` (Ampere and newer);
- x86 CPU: `amx_bf16` or `avx512_bf16` in `torch.cpu.get_capabilities()`;
- ARM CPU: `sve_bf16` (Neoverse V1 / V2, e.g. Graviton 3 / 4, where oneDNN runs bf16 GEMMs natively); Apple silicon
  reports no SVE and gets fp32 (not measured here);
- anything else: fp32.

`bf16: true` on a CPU without native bf16 is honoured but logs a warning with the slowdown measured on the spot
(a 256^3 matmul in each precision, well under a second even where bf16 is slow).
"""

from __future__ import annotations

import functools
import logging
import platform
import time
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

AUTO = "auto"
_TRUE = {"true", "1", "yes", "on", "bf16"}
_FALSE = {"false", "0", "no", "off", "fp32", "none"}


@dataclass(frozen=True)
class Precision:
    """The precision a run uses and why; `as_dict()` is what run folders, metrics and model cards record."""

    bf16: bool
    requested: str  # "auto", "true" or "false"
    device: str
    reason: str

    @property
    def name(self) -> str:
        return "bf16 autocast" if self.bf16 else "fp32"

    def as_dict(self) -> dict:
        return {"precision": self.name, "bf16": self.bf16, "requested": self.requested, "device": self.device,
                "reason": self.reason}


def parse_bf16(value: bool | str | None) -> bool | None:
    """`True` / `False`, or None for auto. Accepts booleans and the strings a YAML file or a command line gives."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == AUTO:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"bf16 must be auto, true or false, not {value!r}")


def cpu_native_bf16(capabilities: dict | None = None) -> tuple[bool, str]:
    """Whether this CPU computes bf16 matmuls natively, and the capability that says so."""
    caps = dict(capabilities if capabilities is not None else cpu_capabilities())
    arch = str(caps.get("architecture", "")).lower()
    for flag in ("amx_bf16", "avx512_bf16", "sve_bf16"):
        if caps.get(flag):
            return True, f"CPU has {flag.upper().replace('_', '-')}"
    vector = torch.backends.cpu.get_cpu_capability()
    return False, f"CPU has no native bf16 ({arch or 'unknown architecture'}, {vector}; no AMX-BF16 / AVX512-BF16)"


def cpu_capabilities() -> dict:
    """`torch.cpu.get_capabilities()` (torch >= 2.8), else the flags in /proc/cpuinfo."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        return dict(get())
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {flag: True for flag in flags} | {"architecture": platform.machine()}


def cuda_native_bf16() -> tuple[bool, str]:
    name = torch.cuda.get_device_name()
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the argument
        native = torch.cuda.is_bf16_supported()
    return native, f"CUDA device {name} {'supports' if native else 'does not support'} bf16"


def choose_bf16(value: bool | str | None = AUTO, device: str | None = None) -> Precision:
    """Resolve `bf16: auto | true | false` for `device` ("cuda" / "cpu"; default: CUDA when available)."""
    wanted = parse_bf16(value)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    native, why = cuda_native_bf16() if device.startswith("cuda") else cpu_native_bf16()
    requested = AUTO if wanted is None else str(wanted).lower()
    if wanted is None:
        return Precision(native, requested, device, f"auto: {why}")
    if wanted and not native:
        logger.warning("bf16: true on a device without native bf16 (%s): %s. Use bf16: auto (or false) for fp32.",
                       why, bf16_slowdown_note() if device == "cpu" else "bf16 runs emulated")
    return Precision(wanted, requested, device, f"set explicitly ({why})")


@functools.cache
def bf16_slowdown_note(n: int = 256) -> str:
    """How much slower a bf16 matmul is than fp32 here, measured now (one n^3 matmul each, after a warm-up)."""
    speeds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        start = time.perf_counter()
        a @ b
        speeds[dtype] = 2 * n**3 / max(time.perf_counter() - start, 1e-9) / 1e9
    ratio = speeds[torch.float32] / speeds[torch.bfloat16]
    return (f"a {n}^3 matmul runs at {speeds[torch.bfloat16]:.1f} GFLOP/s in bf16 against "
            f"{speeds[torch.float32]:.1f} in fp32 on this CPU ({ratio:.1f}x slower)")


__all__ = ["AUTO", "Precision", "choose_bf16", "cpu_native_bf16", "parse_bf16"]
