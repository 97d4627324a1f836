"""The `bioreason` console command's entry point, kept outside the `bioreason` package on purpose.

`import bioreason` registers the model with transformers' Auto classes, which imports torch and transformers (~3 s on
2 cores). `bioreason --help`, `data check`, `data build` and `cache` need neither, so this module is imported first
(`bioreason` sees it in `sys.modules` and defers the registration) and registers only before a command that loads or
trains a model. `python -m bioreason.cli` still works; it registers on import like any library use.
"""

from __future__ import annotations

import sys

# commands that never load a model: the first word of the command line (none at all is the top-level help)
NO_MODEL_COMMANDS = ("data", "cache")


def needs_model(argv: list[str]) -> bool:
    """Whether the command line names a command that loads, trains or exports a model."""
    words = [a for a in argv if not a.startswith("-")]
    if not words or "-h" in argv[:2] or "--help" in argv[:2]:
        return False  # top-level help, or no command (argparse says which are available)
    return words[0] not in NO_MODEL_COMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from bioreason import cli, register_auto_classes

    if needs_model(argv):
        register_auto_classes()
    return cli.main(argv)
