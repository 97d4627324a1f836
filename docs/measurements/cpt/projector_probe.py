"""Why CPT align hurts the SFT after it (issue 27): what the projector hands the LLM before and after CPT. For the
composed model of a pipeline config (its seed) and the same model after a CPT-only run of that config, on the train
split and the ID / OOD test records: the norm of the projected tokens against the LLM's own token embeddings, how
much of their variance is between records (an input-independent output carries nothing to read), and a logistic
regression on the mean-pooled projected tokens fit on train (can the label still be read from what the LLM gets?).

    bioreason run pipeline --config recipes/configs/quickstart.yaml output_dir=runs/cpt_only "stages=[cpt]" \
        evaluate_base=false reliance=none
    PYTHONPATH=. .venv/bin/python docs/measurements/cpt/projector_probe.py recipes/configs/quickstart.yaml \
        runs/cpt_only/final
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

from bioreason.data.chat import modality_inputs

HERE = os.path.dirname(os.path.abspath(__file__))


@torch.no_grad()
def projected(model, processor, records: list[dict], batch_size: int = 32) -> np.ndarray:
    """`[N, tokens, H]`: each record's (single) input through its encoder and projector, as the LLM receives it."""
    inner = model.model
    (modality,) = inner.config.modalities
    out = []
    for start in range(0, len(records), batch_size):
        items = [modality_inputs(r).get(modality)[0] for r in records[start: start + batch_size]]
        tensors, _ = processor.featurize(modality, items)
        projector = inner.projectors[modality]
        emb, mask = inner.encode(modality, tensors["values"], tensors["mask"].bool())
        tokens = projector(emb.to(inner.language_model.dtype), mask)
        out.append(tokens.float().numpy())
    return np.concatenate(out)


def describe(tokens: np.ndarray, train_y: list[str], test: dict[str, tuple[np.ndarray, list[str]]], n_train: int,
             embedding_norm: float, seed: int = 0) -> dict:
    from bioreason.evaluation.linear_probe import make_linear_probe

    norms = np.linalg.norm(tokens, axis=-1)
    pooled = tokens.mean(1)
    between = pooled.var(0).sum() / max(float((tokens.reshape(-1, tokens.shape[-1])).var(0).sum()), 1e-12)
    probe = make_linear_probe(seed).fit(pooled[:n_train], train_y)
    accuracy = {k: float((probe.predict(x.mean(1)) == np.array(y)).mean()) for k, (x, y) in test.items()}
    return {"token_norm_mean": float(norms.mean()),
            "token_norm_over_embedding_norm": float(norms.mean() / embedding_norm),
            "between_record_variance_share": float(between), "probe_accuracy": accuracy}


def main(config: str, cpt_model: str, n_train: int = 512) -> None:
    from transformers import AutoModelForCausalLM, set_seed

    from bioreason.model.processing_bioreason import BioReasonProcessor
    from bioreason.recipes.pipeline import ARGUMENTS
    from bioreason.training.config import parse_arguments
    from bioreason.training.prepare import load_model
    from bioreason.training.task import load_task

    p, model_args, data = parse_arguments(ARGUMENTS, ["--config", config])
    dataset, _ = load_task(data)
    rng = np.random.default_rng(0)
    train = [dict(dataset["train"][int(i)]) for i in rng.choice(len(dataset["train"]), n_train, replace=False)]
    held = {"id": [dict(r) for r in dataset["id_test"]], "ood": [dict(r) for r in dataset["ood_test"]]}
    set_seed(p.seed)  # the composed model the pipeline starts from (its seed initialises the projector)
    before, processor = load_model(model_args)
    after = AutoModelForCausalLM.from_pretrained(cpt_model)
    after_processor = BioReasonProcessor.from_pretrained(cpt_model)
    out = {}
    for name, model, proc in (("before_cpt", before, processor), ("after_cpt", after, after_processor)):
        model.eval()
        embedding_norm = float(model.get_input_embeddings().weight.float().norm(dim=-1).mean())
        tokens = projected(model, proc, train + held["id"] + held["ood"])
        test = {"id": (tokens[n_train: n_train + len(held["id"])], [r["answer"] for r in held["id"]]),
                "ood": (tokens[n_train + len(held["id"]):], [r["answer"] for r in held["ood"]])}
        out[name] = describe(tokens, [r["answer"] for r in train], test, n_train, embedding_norm)
        out[name]["llm_embedding_norm_mean"] = embedding_norm
        print(name, json.dumps(out[name]))
    with open(os.path.join(HERE, "projector_probe.json"), "w", encoding="utf-8") as fh:
        json.dump({"config": config, "cpt_model": cpt_model, "n_train": n_train, **out}, fh, indent=2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
