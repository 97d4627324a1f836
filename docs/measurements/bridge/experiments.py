"""The bridge experiments of docs/BRIDGE.md: SFT runs of the quickstart model (SmolLM2-135M + AntiBERTy, resampler
K=16, LoRA r16) on antibody_chain with one candidate change each, scored on 64 + 64 ID / OOD records.

    PYTHONPATH=. .venv/bin/python docs/measurements/bridge/experiments.py '{"balance_labels": false}' [--variant V]

The JSON holds pipeline / model / data fields (as in recipes/configs/quickstart.yaml); `--variant` patches in a change
the package does not ship, to measure it:
- `projector-lr-10x`: the projectors in their own optimizer group at 10x the LoRA learning rate;
- `rms-scaled`: every projected feature row rescaled to the RMS of the LLM's token embeddings;
- `standardized`: the encoder's features standardised per dimension with the train split's mean and standard
  deviation (what the probe's StandardScaler does) before the projector (one modality).

`projector-lr-10x` sets the package's stage setting `sft.projector_learning_rate` to 10x the SFT learning rate.
Prints one `RESULT {...}` line with ID / OOD accuracy and per-class F1.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import bioreason.recipes.pipeline as pipeline
from bioreason.model.modeling_bioreason import BioReasonModel
from bioreason.training.arguments import DataArguments, ModelArguments


def rms_scaled() -> None:
    features = BioReasonModel.get_modality_features

    def get_modality_features(self, modality, values, mask):
        out = features(self, modality, values, mask)
        target = self.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt()
        return out * (target / out.float().pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()).to(out.dtype)

    BioReasonModel.get_modality_features = get_modality_features


def standardized() -> None:
    from bioreason.evaluation.baselines import pooled_features
    from bioreason.training.prepare import base_model

    baselines = pipeline.baseline_metrics

    def baseline_metrics(model, processor, dataset, cells, data, bf16=False):
        out = baselines(model, processor, dataset, cells, data, bf16=bf16)
        inner = base_model(model).model
        features = torch.from_numpy(pooled_features(inner, processor, [dict(r) for r in dataset["train"]], cells))
        inner.feature_stats = (features.mean(0), features.std(0).clamp(min=1e-6))
        return out

    encode = BioReasonModel.encode

    def standardized_encode(self, modality, values, mask):
        emb, emb_mask = encode(self, modality, values, mask)
        if getattr(self, "feature_stats", None) is not None:
            mean, std = self.feature_stats
            emb = (emb - mean.to(emb)) / std.to(emb)
        return emb, emb_mask

    pipeline.baseline_metrics = baseline_metrics
    BioReasonModel.encode = standardized_encode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="?", default="{}")
    parser.add_argument("--variant", choices=["projector-lr-10x", "rms-scaled", "standardized"])
    args = parser.parse_args()
    if args.variant == "rms-scaled":
        rms_scaled()
    elif args.variant == "standardized":
        standardized()
    keep = ("n", "accuracy", "per_class_f1", "reliance")
    pipeline.strip = lambda metrics: {k: v for k, v in metrics.items() if k in keep}
    over = json.loads(args.overrides)
    model = {k: over.pop(k) for k in list(over) if k in ModelArguments.__dataclass_fields__}
    data = {k: over.pop(k) for k in list(over) if k in DataArguments.__dataclass_fields__}
    p = pipeline.PipelineArguments(**{"output_dir": "/tmp/bridge-exp", "stages": ["sft"], "evaluate_base": False,
                                      "save_model": False, "sft_examples": 256,
                                      "sft": {"learning_rate": 5e-4, "lora_r": 16}, "seed": 0, **over})
    if args.variant == "projector-lr-10x":
        p.sft = {**p.sft, "projector_learning_rate": 10 * pipeline.resolved_sections(p)["sft"]["learning_rate"]}
    start = time.time()
    metrics = pipeline.run(p, ModelArguments(**{"projector": "resampler", "num_queries": 16, **model}),
                           DataArguments(**{"max_eval_examples": 64, "use_reasoning": False, **data}))
    print("RESULT", json.dumps({"overrides": args.overrides, "variant": args.variant, "cpu_threads":
                                torch.get_num_threads(), "seconds": round(time.time() - start),
                                "stages": metrics["stages"], "baselines": metrics["baselines"]}), flush=True)


if __name__ == "__main__":
    main()
