"""One path from a YAML file and `key=value` overrides to the dataclasses (`bioreason.training.arguments`): the file
is read once, a dotted key (`sft.lora_r`) folded into its section, the result given to TRL's `TrlParser` as its
defaults, and the remaining `--key value` arguments parsed over them (argparse converts their types)."""

from __future__ import annotations

import os
import sys
from typing import Any


def nest_dotted(config: dict, overrides: list[tuple[str, Any]] = ()) -> dict:
    """`{"sft.lora_r": 8}` -> `{"sft": {"lora_r": 8}}`, merged into any `sft:` section already there; then the
    overrides, the same way. One level: a section and its key."""
    out: dict = {}
    for key, value in [*config.items(), *overrides]:
        section, dot, name = key.partition(".")
        if not dot:  # (sections are copied: the caller's config stays as it was)
            if isinstance(value, dict):
                value = {**(out[key] if isinstance(out.get(key), dict) else {}), **value}
            out[key] = value
            continue
        if not isinstance(out.setdefault(section, {}), dict):
            raise ValueError(f"`{key}`: `{section}` is not a section of settings")
        out[section][name] = value
    return out


# Field names the stage scripts took before ModelConfig's (refused with their new name).
RENAMED = {"model_path": "model_name_or_path"}


def parse_arguments(arguments: tuple[type, ...], argv: list[str] | None,
                    renamed: dict[str, str] | None = None) -> tuple:
    """The dataclasses `arguments` filled from `--config FILE` and `--key value` arguments (TRL's `TrlParser`), where
    a key may also name a section's setting, `--sft.learning_rate 1e-4` (or `sft.learning_rate: 1e-4` in the file):
    it is folded into the section (a YAML value: numbers, booleans and lists parse). The file's `env:` mapping sets
    environment variables, as TRL's does. A key of `renamed` (an older name) is refused with its new name."""
    import yaml
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    dotted, rest, config_path, i = [], [], None, 0
    while i < len(argv):
        if argv[i] == "--config" and i + 1 < len(argv):
            config_path = argv[i + 1]
            i += 2
        elif argv[i].startswith("--") and "." in argv[i] and i + 1 < len(argv):
            dotted.append((argv[i][2:], parse_value(argv[i + 1])))
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    config: Any = {}
    if config_path is not None:
        with open(config_path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: a config is a YAML mapping of settings, not {type(config).__name__}")
    flags = [a[2:].split("=", 1)[0] for a in rest if a.startswith("--")]
    for key in [*flags, *config, *(k for k, _ in dotted)]:
        if key in (renamed or {}):
            raise ValueError(f"`{key}` is now `{renamed[key]}`")
    merged = nest_dotted(config, dotted)
    for key, value in (merged.pop("env", None) or {}).items():
        os.environ[key] = str(value)
    parser = TrlParser(arguments)

    def one_line(message: str):  # argparse's error prints the whole usage (160+ lines for a stage) before it
        raise ValueError(f"{message} (bioreason run RECIPE --help lists the settings)")

    parser.error = one_line
    known = {action.dest for action in parser._actions}
    for key in [*merged, *flags]:
        if key not in known:
            raise ValueError(unknown_setting(key, known, config_path if key in merged else None))
    parser.set_defaults_with_config(**merged)
    return parser.parse_args_into_dataclasses(args=rest)


def parse_value(text: str) -> Any:
    """An override's value as YAML reads it (numbers, booleans, lists), except that `1e-4` is a number: YAML 1.1,
    which PyYAML reads, takes a float without a dot for a string, and a learning rate is the setting it hits."""
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            return value
    return value


def unknown_setting(key: str, known: set[str], config_path: str | None) -> str:
    """The one-line error of a key no dataclass field has, with the nearest field names."""
    import difflib

    near = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
    where = f"{config_path}: " if config_path else ""
    return (f"{where}`{key}` is not a setting of this recipe" + (f"; did you mean {', '.join(near)}?" if near else "")
            + " (bioreason run RECIPE --help lists them)")
