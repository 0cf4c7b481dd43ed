"""The `resnets` program's entry point: `resnets --help` and `--version` answer at once, without
importing torch (seconds on a cold disk); every other command line goes to `resnets.cli.main`."""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .commands import SUMMARIES

DESCRIPTION = "Deep residual networks (He et al., CVPR 2016)."
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ("resnets: error: ...") rather than usage + error, and no
    flag is taken from its first letters: timm's `--drop` (classifier dropout) must not become `--drop-path`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {with_suggestion(message)}\n")


def with_suggestion(message: str) -> str:
    """argparse's "invalid choice" with the nearest choice, as git and timm suggest.

    >>> with_suggestion("argument command: invalid choice: 'trian' (choose from 'models', 'train', 'eval')")
    "argument command: invalid choice: 'trian' (choose from 'models', 'train', 'eval'); did you mean 'train'?"
    """
    found = re.fullmatch(r"(.*invalid choice: '([^']*)' \(choose from (.*)\))", message)
    if not found:
        return message
    choices = re.findall(r"'([^']*)'", found.group(3))
    near = difflib.get_close_matches(found.group(2), choices, n=1, cutoff=0.6)
    return f"{message}; did you mean {near[0]!r}?" if near else message


def top_parser() -> tuple[Parser, Any]:
    """The `resnets` parser with its --version, and the subparsers action the commands are added to."""
    parser = Parser(prog="resnets", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    return parser, parser.add_subparsers(dest="command", required=True, parser_class=Parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "--version"):  # the program's own help: no command to load
        parser, sub = top_parser()
        for name, summary in SUMMARIES.items():
            sub.add_parser(name, help=summary)
        parser.parse_args(args)  # prints and exits (0 for help and version, 2 for nothing given)
    # The commands import torch: loaded only now (importlib: an import statement here would load it above).
    cli = importlib.import_module(".cli", __package__)
    return cli.main(args)
