"""Run the SFT recipe on a composed model and time it per epoch and per step (a TrainerCallback), so benchmarks measure
the code path users run, not a copy of it."""

from __future__ import annotations

import copy
import time
from typing import Any

from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Epoch and step wall times, logged losses, and (with `profile_step`) the self-CPU-time shares of the top
    operators in that one optimizer step."""

    def __init__(self, profile_step: int | None = None):
        self.epochs: list[float] = []
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.profile_step, self.profile, self._profiler = profile_step, None, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epochs.append(time.perf_counter() - self._epoch)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.profile_step is not None and state.global_step + 1 == self.profile_step:
            from torch.profiler import ProfilerActivity, profile

            self._profiler = profile(activities=[ProfilerActivity.CPU])
            self._profiler.__enter__()
        self._step = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(time.perf_counter() - self._step)
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            events = sorted(self._profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in events)
            self.profile = {e.key: round(e.self_cpu_time_total / total, 3) for e in events[:8]}
            self._profiler = None


def sft(model, processor, dataset: str, examples: int, epochs: int, batch_size: int, out: str,
        feature_cache: str = "memory", cache_dir: str | None = None, lora_r: int = 16, packing: bool = False,
        lr: float = 5e-4, use_reasoning: bool = False, profile_step: int | None = None) -> dict[str, Any]:
    """SFT (LoRA on the LLM, projector in full, encoder frozen) of a copy of `model`; returns timings and the model."""
    from bioreason.recipes import sft as sft_recipe
    from bioreason.training.arguments import BioSFTConfig, DataArguments, ModelArguments

    model = copy.deepcopy(model)  # the recipe prepares it (freeze policy, cache, LoRA) as it does a loaded one
    args = ModelArguments(feature_cache=feature_cache, feature_cache_dir=cache_dir, use_peft=True, lora_r=lora_r,
                          encoders_trainable=False)
    data = DataArguments(dataset=f"benchmark:{dataset}", max_train_examples=examples, use_reasoning=use_reasoning)
    config = BioSFTConfig(output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
                          learning_rate=lr, bf16="auto", use_cpu=True, report_to="none", save_strategy="no",
                          gradient_checkpointing=False, logging_steps=1, disable_tqdm=True, seed=0, packing=packing)
    timer = StepTimer(profile_step)
    result = sft_recipe.run(sft_recipe.SFTRecipeArguments(evaluate=False), args, data, config, model=model,
                            processor=processor, callbacks=[timer])
    cache = result["model"].get_base_model().model.feature_cache
    return {"epochs": timer.epochs, "steps": timer.steps, "losses": timer.losses, "profile": timer.profile,
            "model": result["model"],
            "cache": cache.stats() if cache is not None else None}
