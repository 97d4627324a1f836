"""bioreason: HF-native multimodal biological reasoning models (DNA / RNA / protein encoders -> projectors -> LLM).

Importing registers the config, model and processor with transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained(path)` and `AutoProcessor.from_pretrained(path)` load BioReason folders.
The one exception is the `bioreason` console command (`bioreason_cli`): registering imports torch and transformers
(~3 s), which `bioreason --help` and `data check` do not need, so the command registers only before a command that
loads a model. The exported names load on first use either way.
"""

import importlib as _importlib
import logging as _logging
import sys as _sys


class _OfflineKernelNoise(_logging.Filter):
    """Drops two warnings that are about the hub, not the user's run: bitsandbytes tries to fetch a CPU 4-bit kernel
    from the hub when it is imported (on CPUs with AVX512-BF16), and `kernels` notes that it skips a trust check
    offline. Both print on every command here although nothing is quantized; other records pass."""

    NOISE = ("Failed to load CPU gemm_4bit_forward from kernels-community", "Skipping publisher trust check for")

    def filter(self, record: _logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOISE)


for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):  # before either package is imported
    _logging.getLogger(_name).addFilter(_OfflineKernelNoise())

_EXPORTS = {
    "MODALITIES": "bioreason.data.modalities",
    "BioReasonConfig": "bioreason.model.configuration_bioreason",
    "BioReasonForCausalLM": "bioreason.model.modeling_bioreason",
    "BioReasonModel": "bioreason.model.modeling_bioreason",
    "BioReasonProcessor": "bioreason.model.processing_bioreason",
    "compose": "bioreason.model.composition",
}


def register_auto_classes() -> None:
    """Register the config, model and processor with transformers' Auto classes (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor

    from bioreason.model.configuration_bioreason import BioReasonConfig
    from bioreason.model.modeling_bioreason import BioReasonForCausalLM, BioReasonModel
    from bioreason.model.processing_bioreason import BioReasonProcessor

    AutoConfig.register("bioreason", BioReasonConfig, exist_ok=True)
    AutoModel.register(BioReasonConfig, BioReasonModel, exist_ok=True)
    AutoModelForCausalLM.register(BioReasonConfig, BioReasonForCausalLM, exist_ok=True)
    AutoProcessor.register(BioReasonConfig, BioReasonProcessor, exist_ok=True)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(_importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bioreason' has no attribute {name!r}")


if "bioreason_cli" not in _sys.modules:  # a library import: the Auto classes work right after `import bioreason`
    register_auto_classes()

__version__ = "0.1.0"
__all__ = ["MODALITIES", "BioReasonConfig", "BioReasonForCausalLM", "BioReasonModel", "BioReasonProcessor", "compose",
           "register_auto_classes"]
