"""The model: config, `BioReasonForCausalLM` (encoders -> projectors -> placeholder scatter -> LLM), the processor
that expands modality markers, and the pieces a forward pass uses (feature cache, compact LM head, packed attention,
shared-prefix generation, the precision the hardware runs natively). `composition` builds a model from named parts."""
