"""Publishing to the Hugging Face Hub: one complete folder per model.

`export_folder(run_dir, out)` writes exactly what a push uploads: safetensors weights, config (encoder specs inside),
generation config, processor and tokenizer files, the model card (`README.md`, rendered from
`bioreason/hub/model_cards/`), evaluation results (`.eval_results/`), and a self-contained copy of the modeling code
with an `auto_map`, so that `AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)` works where bioreason
is not installed. Nothing else is copied: training checkpoints, optimizer states and any pickle file stay behind.

`push(run_dir, repo_id)` exports into a temporary folder and uploads it with `HfApi.upload_folder`; huggingface_hub
skips files whose content is already on the Hub, so pushing an unchanged folder makes no new commit. The token is
read by huggingface_hub (`HF_TOKEN` or `hf auth login`) and is never written anywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from bioreason.data.records import EVAL_SPLITS
from bioreason.hub.cards import base_model_of, composed_card, saved_task, trained_card
from bioreason.model.composition import SMOLLM2_ID

# What may be uploaded from a model folder; anything else (pickles above all) is refused.
ALLOWED = re.compile(r"^(model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json|config\.json|"
                     r"generation_config\.json|processor_config\.json|tokenizer\.json|tokenizer_config\.json|"
                     r"special_tokens_map\.json|chat_template\.jinja|vocab\.json|merges\.txt)$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

# Source module -> file name in the exported folder; imports between them become relative imports.
REMOTE_CODE = {
    "bioreason.data.errors": "bioreason_data_errors",
    "bioreason.data.expression": "bioreason_data_expression",
    "bioreason.data.modalities": "bioreason_modalities",
    "bioreason.model.configuration_bioreason": "configuration_bioreason",
    "bioreason.model.modeling_bioreason": "modeling_bioreason",
    "bioreason.model.processing_bioreason": "processing_bioreason",
    "bioreason.model.feature_cache": "bioreason_feature_cache",
    "bioreason.model.rollout": "bioreason_rollout",
    "bioreason.encoders.base": "bioreason_encoders_base",
    "bioreason.encoders.tokenized": "bioreason_encoders_tokenized",
    "bioreason.encoders.dna": "bioreason_encoders_dna",
    "bioreason.encoders.protein": "bioreason_encoders_protein",
    "bioreason.encoders.rna": "bioreason_encoders_rna",
    "bioreason.encoders.plain_pickle": "bioreason_encoders_plain_pickle",
    "bioreason.encoders.weights": "bioreason_encoders_weights",
    "bioreason.encoders.kmer": "bioreason_encoders_kmer",
    "bioreason.encoders.scanpy_pca": "bioreason_encoders_scanpy_pca",
    "bioreason.projectors.base": "bioreason_projectors_base",
    "bioreason.projectors.linear": "bioreason_projectors_linear",
    "bioreason.projectors.pooling": "bioreason_projectors_pooling",
}
# the registries fill when these modules import; the exported entry points import them explicitly
REGISTRATION = [name for mod, name in REMOTE_CODE.items() if mod.rsplit(".", 1)[-1] in
                ("dna", "protein", "rna", "kmer", "scanpy_pca", "linear", "pooling")]
AUTO_MAP = {
    "AutoConfig": "configuration_bioreason.BioReasonConfig",
    "AutoModel": "modeling_bioreason.BioReasonModel",
    "AutoModelForCausalLM": "modeling_bioreason.BioReasonForCausalLM",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_bioreason.BioReasonProcessor"}
PART_LICENSES = {  # what each part is released under, for the card's license field
    SMOLLM2_ID: "apache-2.0", "antiberty": "mit", "esm2": "mit", "enformer": "apache-2.0",
    "nucleotide_transformer": "cc-by-nc-sa-4.0", "geneformer": "apache-2.0", "evo2": "apache-2.0",
    # no pretrained weights: the encoder is this package's code (Apache-2.0) and weights trained or fit here
    "kmer": "apache-2.0", "expression": "apache-2.0", "scanpy_pca": "apache-2.0",
}


def model_dir(run_dir: str) -> str:
    """A pipeline run keeps its model in `final/`; a composed or trained folder is the model itself."""
    final = os.path.join(run_dir, "final")
    folder = final if os.path.exists(os.path.join(final, "config.json")) else run_dir
    if not os.path.exists(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{run_dir}: no model folder (config.json) here or in final/")
    return folder


def part_licenses(model, llm_source: str) -> list[tuple[str, str, str | None]]:
    """(part, source, license or None when not known here) for the LLM and each encoder."""
    rows = [("LLM", llm_source, PART_LICENSES.get(llm_source))]
    for modality, spec in model.config.modalities.items():
        encoder = spec["encoder"]
        rows.append((f"{modality} encoder ({encoder['type']})", encoder.get("source") or encoder["type"],
                     PART_LICENSES.get(encoder["type"])))
    return rows


def derive_license(model, llm_source: str, stated: str | None = None) -> tuple[str, str | None]:
    """(license, license_name): the user's statement wins; one shared license passes through; mixed known
    licenses become `other` with a Hub license id naming all of them (`apache-2.0-and-mit`; the Hub takes `other`
    plus an id and a LICENSE file, not an SPDX expression); an unknown part needs the user to say."""
    if stated:
        return stated, None
    unknown = [source for _, source, lic in part_licenses(model, llm_source) if lic is None]
    if unknown:
        raise ValueError(f"cannot derive a license: the license of {unknown} is not known here; pass --license")
    licenses = sorted({lic for _, _, lic in part_licenses(model, llm_source)})
    return (licenses[0], None) if len(licenses) == 1 else ("other", "-and-".join(licenses))


def license_text(model, llm_source: str, license: str, license_name: str | None) -> str:
    """The card's License section and the exported LICENSE file: the license stated and every part's own."""
    lines = [f"This model is published under `{license_name or license}`. It is made of parts released under their "
             "own licenses; using it means following each of them:", "", "| part | source | license |",
             "|---|---|---|"]
    lines += [f"| {part} | `{source}` | {lic or 'not known here'} |"
              for part, source, lic in part_licenses(model, llm_source)]
    return "\n".join(lines) + "\n"


def remote_code_files() -> dict[str, str]:
    """file name -> source, with package imports rewritten to relative ones."""
    files = {}
    for module, name in REMOTE_CODE.items():
        spec = importlib.util.find_spec(module)
        source = Path(spec.origin).read_text(encoding="utf-8")
        for other, other_name in REMOTE_CODE.items():
            source = re.sub(rf"^(\s*)from {re.escape(other)} import", rf"\1from .{other_name} import", source,
                            flags=re.MULTILINE)
        if name in ("modeling_bioreason", "processing_bioreason"):
            source += "\n\n# registers every encoder and projector type in this folder's copy of the registries\n"
            source += "".join(f"from .{mod} import *  # noqa: E402,F401,F403\n" for mod in REGISTRATION)
        files[f"{name}.py"] = source
    return files


def _json_update(path: str, **updates) -> None:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    data.update(updates)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)


def export_folder(run_dir: str, out: str, repo_id: str = "user/model", license: str | None = None,
                  base_model: str | None = None,
                  datasets: list[str] | None = None) -> str:
    """Write the folder a push would upload into `out` (which must not exist or be empty); returns `out`."""
    from transformers import AutoModelForCausalLM

    import bioreason  # noqa: F401

    source = model_dir(run_dir)
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"{out} exists and is not empty")
    os.makedirs(out, exist_ok=True)
    for name in sorted(os.listdir(source)):
        if name.endswith(PICKLE_SUFFIXES):
            continue  # never published: weights travel as safetensors only
        if ALLOWED.match(name):
            path = os.path.join(source, name)
            if os.path.islink(path):  # a link would upload whatever it points to, inside the folder or not
                raise ValueError(f"{path} is a symbolic link: copy the file it points to into {source} to publish it")
            shutil.copy2(path, os.path.join(out, name), follow_symlinks=False)
    if not any(n.endswith(".safetensors") for n in os.listdir(out)):
        raise ValueError(f"{source}: no safetensors weights to publish")
    # Remote code: a self-contained copy of the classes, wired through auto_map
    for name, code in remote_code_files().items():
        Path(out, name).write_text(code, encoding="utf-8")
    _json_update(os.path.join(out, "config.json"), auto_map=AUTO_MAP)
    if os.path.exists(os.path.join(out, "processor_config.json")):
        _json_update(os.path.join(out, "processor_config.json"), auto_map=PROCESSOR_AUTO_MAP)
    # Card and evaluation results
    model = AutoModelForCausalLM.from_pretrained(source)
    metrics_path = os.path.join(run_dir, "metrics.json")
    metrics = json.load(open(metrics_path, encoding="utf-8")) if os.path.exists(metrics_path) else None
    card = render_card(model, metrics, repo_id=repo_id, license=license, datasets=datasets, run_dir=run_dir,
                       base_model=base_model, remote_code=True)
    card.save(os.path.join(out, "README.md"))
    if getattr(card.data, "license_link", None) == "LICENSE":
        Path(out, "LICENSE").write_text(license_text(model, base_model_of(model, base_model), card.data.license,
                                                     card.data.license_name), encoding="utf-8")
    if metrics:
        write_eval_results(out, metrics, dataset=_dataset_name(run_dir))
    return out


def _run_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, "run_config.json")
    return json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}


def _dataset_name(run_dir: str) -> str:
    """The dataset as published: `benchmark:NAME` as is; a local folder by its last component only (an absolute path
    names the user's machine, not a dataset anyone else can find)."""
    dataset = str(_run_config(run_dir).get("dataset", "unknown"))
    if dataset.startswith("benchmark:"):
        return dataset
    return os.path.basename(os.path.normpath(dataset)) or "unknown"


def render_card(model, metrics: dict | None, repo_id: str, license: str | None = None,
                datasets: list[str] | None = None, run_dir: str | None = None, base_model: str | None = None,
                remote_code: bool = False):
    """The model card for a folder: the trained card when the run has metrics, else the composed card. The base
    model and its license come from the model (`config.llm_source`, recorded at composition) or `base_model`; a
    model that does not record it (an LLM from a local folder or an unknown GGUF) is refused, not guessed."""
    llm = base_model_of(model, base_model)
    if llm is None:
        given = (getattr(model.config, "llm_source", None) or {}).get("path")
        raise ValueError(f"the model does not record the hub id of its LLM (built from {given or 'an unknown source'}"
                         "): pass --base-model HUB_ID (base_model=) so the card names the right base model and license")
    if metrics:
        card = trained_card(model, metrics, dataset_name=_dataset_name(run_dir or ""), repo_id=repo_id,
                            base_model=base_model, task=saved_task(model_dir(run_dir)) if run_dir else None,
                            remote_code=remote_code)
    else:
        card = composed_card(model, repo_id=repo_id, base_model=base_model)
    card.data.license, license_name = derive_license(model, llm, license)
    if license_name:
        card.data.license_name = license_name
        card.data.license_link = "LICENSE"  # export_folder writes it: the parts and their licenses
    card.text += "\n## License\n\n" + license_text(model, llm, card.data.license, license_name)
    if datasets:
        card.data.datasets = datasets
    return card


def write_eval_results(out: str, metrics: dict, dataset: str) -> None:
    """`.eval_results/<split>.yaml`: the final stage's ID and OOD metrics, one file per split."""
    folder = os.path.join(out, ".eval_results")
    os.makedirs(folder, exist_ok=True)
    final = metrics["stages"][-1]
    for key, split in EVAL_SPLITS.items():
        result = {k: v for k, v in final.get(key, {}).items() if isinstance(v, (int, float))}
        with open(os.path.join(folder, f"{key}.yaml"), "w", encoding="utf-8") as fh:
            yaml.safe_dump({"dataset": dataset, "split": split, "stage": final["name"], "metrics": result}, fh)


def push(run_dir: str, repo_id: str, private: bool = False, license: str | None = None, base_model: str | None = None,
         datasets: list[str] | None = None, token: str | None = None, commit_message: str = "Upload BioReason model"):
    """Export and upload; returns huggingface_hub's CommitInfo (an unchanged folder makes no new commit)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_folder(run_dir, os.path.join(tmp, "upload"), repo_id=repo_id, license=license,
                               base_model=base_model,
                               datasets=datasets)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 repo_type="model")


def push_model(model, processor, repo_id: str, private: bool = False, license: str | None = None,
               base_model: str | None = None, token: str | None = None, **kwargs):
    """`push` for a model in memory: save it with its processor to a temporary folder and publish that folder (weights,
    processor, card, remote code). transformers' own `model.push_to_hub` uploads weights and config only."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        return push(tmp, repo_id, private=private, license=license, base_model=base_model, token=token, **kwargs)


__all__ = ["derive_license", "export_folder", "license_text", "model_dir", "part_licenses",
           "push", "push_model", "remote_code_files", "render_card"]
