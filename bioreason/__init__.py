"""bioreason: HF-native multimodal biological reasoning models (DNA / RNA / protein encoders -> projectors -> LLM).

Importing registers the config, model and processor with transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained(path)` and `AutoProcessor.from_pretrained(path)` load BioReason folders.
"""

import logging as _logging


class _OfflineKernelNoise(_logging.Filter):
    """Drops two warnings that are about the hub, not the user's run: bitsandbytes tries to fetch a CPU 4-bit kernel
    from the hub when it is imported (on CPUs with AVX512-BF16), and `kernels` notes that it skips a trust check
    offline. Both print on every command here although nothing is quantized; other records pass."""

    NOISE = ("Failed to load CPU gemm_4bit_forward from kernels-community", "Skipping publisher trust check for")

    def filter(self, record: _logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOISE)


for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):  # before either package is imported
    _logging.getLogger(_name).addFilter(_OfflineKernelNoise())

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor  # noqa: E402

from bioreason.model.composition import compose  # noqa: E402
from bioreason.model.configuration_bioreason import MODALITIES, BioReasonConfig  # noqa: E402
from bioreason.model.modeling_bioreason import BioReasonForCausalLM, BioReasonModel  # noqa: E402
from bioreason.model.processing_bioreason import BioReasonProcessor  # noqa: E402

AutoConfig.register("bioreason", BioReasonConfig, exist_ok=True)
AutoModel.register(BioReasonConfig, BioReasonModel, exist_ok=True)
AutoModelForCausalLM.register(BioReasonConfig, BioReasonForCausalLM, exist_ok=True)
AutoProcessor.register(BioReasonConfig, BioReasonProcessor, exist_ok=True)

__version__ = "0.1.0"
__all__ = ["MODALITIES", "BioReasonConfig", "BioReasonForCausalLM", "BioReasonModel", "BioReasonProcessor", "compose"]
