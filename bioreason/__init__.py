"""bioreason: HF-native multimodal biological reasoning models (DNA / RNA / protein encoders -> projectors -> LLM).

Importing registers the config, model and processor with transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained(path)` and `AutoProcessor.from_pretrained(path)` load BioReason folders.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor

from bioreason.model.composition import compose
from bioreason.model.configuration_bioreason import MODALITIES, BioReasonConfig
from bioreason.model.modeling_bioreason import BioReasonForCausalLM, BioReasonModel
from bioreason.model.processing_bioreason import BioReasonProcessor

AutoConfig.register("bioreason", BioReasonConfig, exist_ok=True)
AutoModel.register(BioReasonConfig, BioReasonModel, exist_ok=True)
AutoModelForCausalLM.register(BioReasonConfig, BioReasonForCausalLM, exist_ok=True)
AutoProcessor.register(BioReasonConfig, BioReasonProcessor, exist_ok=True)

__version__ = "0.1.0"
__all__ = ["MODALITIES", "BioReasonConfig", "BioReasonForCausalLM", "BioReasonModel", "BioReasonProcessor", "compose"]
