"""The `resnets` command: parses arguments and calls the library, nothing more.

Every error a user can cause (a bad name, value, file) surfaces as one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .analysis import complexity
from .models import list_models, model_entry
from .paper import TABLE1_GMACS, paper_figures
from .text import human_count, table

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ("resnets: error: ...") rather than usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


# ----------------------------------------------------------------------------- models, flops


def cmd_models(args: argparse.Namespace) -> int:
    rows = []
    for name in list_models(args.pattern):
        entry = model_entry(name)
        cost = complexity(name)
        paper = paper_figures(name)
        rows.append(
            {
                "name": name,
                "family": entry.family,
                "input_size": list(cost.input_size),
                "params": cost.params,
                "macs": cost.macs,
                "gmacs": round(cost.gmacs, 3),
                "paper_gmacs": paper.get("gmacs"),
                "paper_params_m": paper.get("params_m"),
                "description": entry.description,
            }
        )
    if args.json:
        _print_json(rows)
        return 0
    body = []
    for r in rows:
        paper_cost = f"{r['paper_gmacs']:.1f}" if r["paper_gmacs"] is not None else ""
        paper_params = f"{r['paper_params_m']}M" if r["paper_params_m"] is not None else ""
        body.append(
            [
                r["name"],
                r["family"],
                "x".join(map(str, r["input_size"])),
                human_count(r["params"]),
                paper_params,
                f"{r['gmacs']:.3f}",
                paper_cost,
            ]
        )
    print(table(["model", "family", "input", "params", "paper", "GMACs", "paper"], body, "lllrrrr"))
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    model_entry(args.name)  # an unknown name fails here, before any work
    cost = complexity(args.name, tuple(args.input_size) if args.input_size else None)
    paper_gmacs = TABLE1_GMACS.get(args.name)
    at_paper_size = cost.input_size == (3, 224, 224)
    result = cost.to_dict()
    if paper_gmacs is not None and at_paper_size:
        result["paper_gmacs"] = paper_gmacs
    if args.json:
        _print_json(result)
        return 0
    c, h, w = cost.input_size
    print(f"{args.name} at {c}x{h}x{w}: {cost.params:,} parameters, {cost.macs:,} multiply-adds ({cost.gmacs:.3f} G)")
    rows = [
        [
            s.name,
            "x".join(map(str, s.output_shape)),
            f"{s.params:,}",
            f"{s.macs / 1e9:.4f}",
            f"{100 * s.macs / max(cost.macs, 1):.1f}%",
        ]
        for s in cost.stages
    ]
    print(table(["stage", "output", "params", "GMACs", "share"], rows, "llrrr"))
    if paper_gmacs is not None:
        if at_paper_size:
            diff = 100 * (cost.gmacs / paper_gmacs - 1)
            print(f"paper (Table 1): {paper_gmacs} GMACs; this count {cost.gmacs:.3f} ({diff:+.1f}%)")
        else:
            print(f"paper (Table 1): {paper_gmacs} GMACs at 3x224x224")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="resnets", description="Deep residual networks (He et al., CVPR 2016).")
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("models", help="list every registered model with its parameters and GMACs")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print a JSON list on stdout")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("flops", help="parameters and multiply-adds of one model, per stage")
    p.add_argument("name")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"))
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_flops)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"resnets: error: {message}".splitlines()[0], file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
