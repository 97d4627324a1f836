"""Model cards rendered from the Jinja templates in `model_cards/` (package data beside this module) through
huggingface_hub's `ModelCard`, so the metadata block (base_model, library_name, tags) is what the Hub parses."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from bioreason.data.records import EVAL_SPLITS
from bioreason.evaluation.report import stage_tables

TEMPLATES = Path(__file__).resolve().parent / "model_cards"
MODALITY_TAGS = {"dna": "genomics", "rna": "transcriptomics", "protein": "proteomics"}


def _parts(model) -> list[dict]:
    return [
        {"modality": m, "encoder": s["encoder"]["type"], "source": s["encoder"].get("source"),
         "trainable": model.model.encoder_trainable(m), "projector": s["projector"]["type"],
         "input_scale": s["encoder"].get("options", {}).get("input_scale")}  # rna: the scale the transform expects
        for m, s in model.config.modalities.items()
    ]


def llm_description(model, base_model: str | None = None) -> str:
    """The LLM's source as the card states it: its hub id (or the given one), and the GGUF file if it was
    dequantised from one."""
    source = getattr(model.config, "llm_source", None) or {}
    name = base_model or source.get("base_model") or source.get("path") or "unknown"
    if source.get("gguf_file"):
        name += f" (dequantised from the GGUF file {source['gguf_file']})"
    return name


def base_model_of(model, base_model: str | None = None) -> str | None:
    """The hub id of the model's LLM: the one given, else what the model recorded at composition."""
    return base_model or (getattr(model.config, "llm_source", None) or {}).get("base_model")


def _card_data(model, llm_source: str | None, **kwargs) -> ModelCardData:
    encoders = model.config.modalities
    base_models = [b for b in [llm_source] if b] + [s["encoder"]["source"] for s in encoders.values()
                                                     if s["encoder"].get("source")]
    return ModelCardData(
        base_model=[b for b in base_models if "/" in b and not os.path.isabs(b)] or None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["biology", "bioreason", *[MODALITY_TAGS[m] for m in encoders]],
        **kwargs,
    )


def composed_card(model, repo_id: str = "path/to/model", base_model: str | None = None) -> ModelCard:
    """The card written next to a freshly composed model; the LLM as the model recorded it (or `base_model`)."""
    config = model.config
    encoders = config.modalities
    data = _card_data(model, base_model_of(model, base_model))
    parts = _parts(model)
    first = next(iter(encoders))
    template = TEMPLATES / "composed.md.j2"
    return ModelCard.from_template(
        data,
        template_path=str(template),
        model_name=os.path.basename(repo_id.rstrip("/")),
        modalities=list(encoders),
        parts=parts,
        llm_type=config.text_config.model_type,
        llm_source=llm_description(model, base_model),
        repo_id=repo_id,
        example_prompt=f"What can you tell about this sequence? <{first}>",
        example_kwargs=f"{first}=[...]",
    )


def saved_task(folder: str) -> dict | None:
    """The task a saved model was trained on (`BioReasonProcessor.task` in its `processor_config.json`), or None."""
    import json

    path = os.path.join(folder, "processor_config.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh).get("task")


# the packages an encoder's own code imports at load time, beyond transformers and torch
ENCODER_PACKAGES = {"enformer": "enformer-pytorch", "evo2": "evo2", "esmc": "esm", "expression": "anndata",
                    "geneformer": "anndata", "precomputed": "anndata", "scanpy_pca": "anndata"}


def install_line(model, remote_code: bool) -> str:
    """The pip command a card's reader runs first: the exported folder's own code needs transformers, torch,
    safetensors and each encoder's package; otherwise the bioreason package itself (not on PyPI: its repository)."""
    if not remote_code:
        return "pip install -e .  # in a checkout of the bioreason repository"
    extras = sorted({ENCODER_PACKAGES[s["encoder"]["type"]] for s in model.config.modalities.values()
                     if s["encoder"]["type"] in ENCODER_PACKAGES})
    return " ".join(["pip install", '"transformers>=5,<6"', "torch", "safetensors", *extras])


def trained_card(model, metrics: dict, dataset_name: str, repo_id: str = "path/to/model",
                 base_model: str | None = None, task: dict | None = None, remote_code: bool = False,
                 name: str | None = None) -> ModelCard:
    """The card of a pipeline run: stages with budgets and ID / OOD results as model-index eval results, and, where
    the model saved its task, how to ask it (`task`: `BioReasonProcessor.task`; `remote_code`: the folder is an
    export that carries its own code, so the snippet loads it with `trust_remote_code=True`)."""
    from huggingface_hub import EvalResult

    final = metrics["stages"][-1]
    splits = tuple(EVAL_SPLITS.items())
    results = [
        EvalResult(task_type="text-classification", dataset_type=dataset_name, dataset_name=f"{dataset_name} ({key})",
                   dataset_split=split, metric_type=metric, metric_value=float(final[key][metric]))
        for key, split in splits
        for metric in ("accuracy", "macro_f1", "reliance") if final.get(key, {}).get(metric) is not None
    ]
    results += [  # the baselines as their own metric names, so the Hub's leaderboard shows the model beside them
        EvalResult(task_type="text-classification", dataset_type=dataset_name, dataset_name=f"{dataset_name} ({key})",
                   dataset_split=split, metric_type="accuracy", metric_name=f"{name} baseline accuracy",
                   metric_value=float(baseline[key]["accuracy"]))
        for name, baseline in metrics.get("baselines", {}).items()
        for key, split in splits if "accuracy" in baseline.get(key, {})
    ]
    name = name or os.path.basename(repo_id.rstrip("/"))  # the title: the repo's name, or the run's
    data = _card_data(model, base_model_of(model, base_model), eval_results=results or None, model_name=name)
    template = TEMPLATES / "trained.md.j2"
    return ModelCard.from_template(
        data, template_path=str(template), model_name=name, repo_id=repo_id,
        llm_type=model.config.text_config.model_type, llm_source=llm_description(model, base_model),
        parts=_parts(model),
        dataset=dataset_name, stages=metrics["stages"], budget=metrics.get("budget"),
        precision=metrics.get("precision"), baselines=metrics.get("baselines"), tables=stage_tables(metrics),
        eval_note=" / ".join(f"{final.get(key, {}).get('n', '?')}" for key in EVAL_SPLITS) + " records",
        task=task, remote_code=remote_code, install=install_line(model, remote_code), task_modality=next(
            (m for m in model.config.modalities if task and task.get("question") and f"<{m}>" in task["question"]),
            None),
    )
