"""The README and docs/ stay true: every `resnets` command they show parses, every option their prose names
exists, every relative link resolves.

A command is a line of a fenced code block that calls the `resnets` entry point: `resnets ...`,
`python -m resnets ...`, or a launcher line such as `torchrun ... -m resnets ...`. Prompts (`$ `),
leading environment assignments, backslash continuations, comments, pipes and redirections are
handled as a shell would; shell variables become placeholders. Output lines never start with the
entry point followed by a space (errors start with `resnets:`), so they are not taken for commands.
"""

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from resnets.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MIN_COMMANDS = 30  # so that the test cannot pass by finding none; the pages show more than this

FENCE = re.compile(r"^\s*(```|~~~)")
ENTRY = re.compile(
    r"""(?:^|\s)(?:
        resnets                                    # the installed command
      | (?:\S*/)?python3?\s+-m\s+resnets           # python -m resnets
      | -m\s+resnets                               # torchrun ... -m resnets
      | \$\(which\s+resnets\)                      # torchrun ... $(which resnets)
    )\s+(?P<args>.*)$""",
    re.VERBOSE,
)
LAUNCHER = re.compile(r"^(?:\S+=\S*\s+)*(?:resnets|(?:\S*/)?python3?|torchrun|srun|\S*/torchrun)\s")
SHELL_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
STOP = {"|", "||", "&", "&&", ";"}
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def fenced_lines(path: Path):
    """(line number, text) of every line inside a fenced code block of `path`."""
    inside = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if FENCE.match(line):
            inside = not inside
        elif inside:
            yield number, line


def logical_lines(path: Path):
    """The fenced lines of `path` with backslash continuations joined, each with its first line number."""
    pending, start = "", 0
    for number, line in fenced_lines(path):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def resnets_argv(line: str) -> list[str] | None:
    """The arguments given to the `resnets` entry point on a shell line, or None if it calls something else."""
    text = line.strip()
    if text.startswith("$ "):
        text = text[2:].lstrip()
    if not LAUNCHER.match(text):
        return None
    found = ENTRY.search(text)
    if found is None:
        return None
    args = SHELL_VAR.sub(lambda m: m.group(1), found.group("args"))
    argv = []
    for token in shlex.split(args, comments=True):
        if token in STOP or re.match(r"^\d*[<>]", token):
            break
        argv.append(token)
    return argv


def shown_commands():
    commands = []
    for path in PAGES:
        for number, line in logical_lines(path):
            argv = resnets_argv(line)
            if argv is not None:
                commands.append((f"{path.relative_to(ROOT)}:{number}", argv))
    return commands


COMMANDS = shown_commands()


def test_the_pages_show_enough_commands_to_check():
    assert len(COMMANDS) >= MIN_COMMANDS, f"only {len(COMMANDS)} commands found in {[p.name for p in PAGES]}"


def test_launcher_lines_are_understood():
    assert resnets_argv("$ resnets eval --checkpoint x.pt --json | tee out.txt  # a comment") == [
        "eval",
        "--checkpoint",
        "x.pt",
        "--json",
    ]
    assert resnets_argv("PYTHONPATH=src python -m resnets models 2>&1 > log") == ["models"]
    assert resnets_argv('srun torchrun --nnodes "$N" -m resnets train --out "$OUT" &') == ["train", "--out", "OUT"]
    assert resnets_argv("torchrun --standalone $(which resnets) demo") == ["demo"]
    assert resnets_argv("resnets: error: run folder runs/r20 is in use by another run") is None
    assert resnets_argv("evaluate with: resnets eval --checkpoint runs/x/model.safetensors") is None
    assert resnets_argv("import resnets") is None


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[f"{w} {shlex.join(a)}" for w, a in COMMANDS])
def test_every_command_shown_parses(where, argv):
    parser = build_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as stop:
        pytest.fail(f"{where}: `resnets {shlex.join(argv)}` does not parse (exit {stop.code}): {stderr.getvalue()}")


def relative_links(path: Path):
    """(line number, target) of every markdown link and image of `path` outside code."""
    inside = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if FENCE.match(line):
            inside = not inside
            continue
        if inside:
            continue
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
                continue  # a URL or an anchor of the same page
            yield number, target.split("#", 1)[0]


def test_every_relative_link_points_at_a_file():
    links = [(path, number, target) for path in PAGES for number, target in relative_links(path)]
    assert len(links) >= len(PAGES), "every page links to at least one other"
    broken = [
        f"{path.relative_to(ROOT)}:{number}: {target}"
        for path, number, target in links
        if not (path.parent / target).exists()
    ]
    assert not broken, "links to nothing:\n" + "\n".join(broken)


# Options of other programs that the prose names: torchrun's restarts, sbatch's warning before the time limit,
# pip's editable install and package index.
FOREIGN_OPTIONS = {"--max-restarts", "--signal", "-e", "--index-url"}
OPTION = re.compile(r"(?<![\w-])(--?[a-z][\w-]*)")


def resnets_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of `parser` and of its subcommands, at any depth."""
    found = set()
    for action in parser._actions:  # argparse keeps no public list of its actions
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= resnets_options(sub)
    return found


def inline_options(path: Path):
    """(line number, option) of every `--option` named in an inline code span of `path`'s prose."""
    text = path.read_text()
    prose = re.sub(r"^\s*(```|~~~).*?^\s*\1", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.M | re.S)
    for span in re.finditer(r"`([^`]+)`", prose):
        number = prose.count("\n", 0, span.start()) + 1
        for option in OPTION.findall(span.group(1)):
            yield number, option.split("=", 1)[0]


def test_every_option_the_prose_names_exists():
    known = resnets_options(build_parser()) | FOREIGN_OPTIONS
    named = [(path, number, option) for path in PAGES for number, option in inline_options(path)]
    assert len(named) >= 100, f"only {len(named)} options found in the prose"
    unknown = [f"{path.relative_to(ROOT)}:{number}: {option}" for path, number, option in named if option not in known]
    assert not unknown, "options no command has:\n" + "\n".join(unknown)
