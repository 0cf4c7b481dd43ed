"""`resnets models` and `resnets flops`: the registry, and what each model costs beside the paper's figures."""

from __future__ import annotations

import argparse
from typing import Any

from ..analysis import complexity
from ..models import list_models, model_entry
from ..paper import GMACS_NOTES, GMACS_SOURCES, PARAMS_SOURCES, paper_figures
from ..text import human_count, table
from . import SUMMARIES
from .arguments import ShownDefaults, Subparsers, print_json

SHARED_NAMES = (
    "\nTwo families share names: resnet50 is the ImageNet bottleneck net (3x224x224), cifar_resnet50 the\n"
    "50-layer CIFAR net (6n+2, 3x32x32). resnetN and plainN of any other 6n+2 depth (resnet38, plain74) and\n"
    "cifar_resnetN / cifar_plainN always build the CIFAR family."
)


def add_models(sub: Subparsers) -> None:
    p = sub.add_parser("models", help=SUMMARIES["models"], formatter_class=ShownDefaults)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print a JSON list on stdout")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    names = list_models(args.pattern.lower())
    if not names:  # an empty table would look like an empty registry
        raise ValueError(f"no model matches {args.pattern!r} (a shell-style pattern: 'resnet*', 'wrn*', '*50')")
    for name in names:
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
        print_json(rows)
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
    print(SHARED_NAMES)
    return 0


def add_flops(sub: Subparsers) -> None:
    p = sub.add_parser("flops", help=SUMMARIES["flops"], formatter_class=ShownDefaults)
    p.add_argument("name", help="a registered model name (see `resnets models`)")
    p.add_argument(
        "--input-size",
        nargs=3,
        type=int,
        metavar=("C", "H", "W"),
        help="count at this input size (default: the family's)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_flops)


def cmd_flops(args: argparse.Namespace) -> int:
    model_entry(args.name)  # an unknown name fails here, before any work
    cost = complexity(args.name, tuple(args.input_size) if args.input_size else None)
    paper = paper_figures(args.name)
    paper_gmacs, paper_params_m = paper.get("gmacs"), paper.get("params_m")
    at_paper_size = cost.input_size == (3, 224, 224)
    result = cost.to_dict()
    if paper_gmacs is not None and at_paper_size:
        result["paper_gmacs"] = paper_gmacs
    if paper_params_m is not None:
        result["paper_params_m"] = paper_params_m
    if args.json:
        print_json(result)
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
        source = GMACS_SOURCES.get(args.name, "paper")
        if at_paper_size:
            diff = 100 * (cost.gmacs / paper_gmacs - 1)
            print(f"paper ({source}): {paper_gmacs} GMACs; this count {cost.gmacs:.3f} ({diff:+.1f}%)")
        else:
            print(f"paper ({source}): {paper_gmacs} GMACs at 3x224x224")
        if args.name in GMACS_NOTES:
            print(f"note: {GMACS_NOTES[args.name]}")
    if paper_params_m is not None:
        diff = 100 * (cost.params / 1e6 / paper_params_m - 1)
        source = PARAMS_SOURCES.get(args.name, "paper")
        print(f"paper ({source}): {paper_params_m}M parameters; this count {cost.params / 1e6:.2f}M ({diff:+.1f}%)")
    return 0
