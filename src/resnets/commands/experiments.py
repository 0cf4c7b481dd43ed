"""The paper's experiments: `resnets experiment degradation`, `grad-flow`, `responses`, `report` and `demo`."""

from __future__ import annotations

import argparse
import shlex
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..analysis.gradflow import gradient_flow_for, save_gradient_flow
from ..analysis.plots import AXES
from ..analysis.responses import POOLINGS, responses_for_checkpoints, save_responses
from ..experiments.degradation import run_degradation, summary_text
from ..experiments.demo import run_demo
from ..report import build_report
from ..text import table
from ..train import Interrupted
from ..train.distributed import rank_of_this_process
from ..train.recipes import RECIPES
from . import SUMMARIES
from .arguments import ShownDefaults, Subparsers, add_device, non_negative_int, positive_int, print_json
from .train import add_config_flags, flag_values


class ExperimentStopped(Exception):
    """A signal stopped one run of an experiment; the message says how to resume the whole experiment."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@contextmanager
def _experiment_resume_hint(args: argparse.Namespace) -> Iterator[None]:
    """An experiment is many runs: a stop is resumed by running the same command, not one model's run."""
    try:
        yield
    except Interrupted as stop:
        command = "resnets " + shlex.join(args.argv)
        raise ExperimentStopped(
            f"{stop.what}; runs that finished are kept: resume the whole experiment "
            f"by running the same command again: {command}",
            stop.signum,
        ) from None


def add_experiment(sub: Subparsers) -> None:
    p = sub.add_parser("experiment", help=SUMMARIES["experiment"])
    experiments = p.add_subparsers(dest="experiment", required=True)
    p = experiments.add_parser("degradation", help="plain and residual nets at several depths (Fig. 6, Table 6)")
    p.add_argument(
        "--depths",
        nargs="+",
        type=int,
        default=[20, 32, 44, 56, 110],
        help="CIFAR-style depths, 6n+2 (default: 20 32 44 56 110)",
    )
    p.add_argument("--seeds", type=positive_int, default=1, help="runs per model, mean and std reported (default: 1)")
    p.add_argument(
        "--first-seed",
        type=non_negative_int,
        default=0,
        help="the seeds are FIRST_SEED ... FIRST_SEED + SEEDS - 1: a seed at a time on different machines, "
        "gathered into one folder afterwards (default: 0)",
    )
    p.add_argument("--recipe", default="paper-cifar", help=f"one of {', '.join(RECIPES)} (default: paper-cifar)")
    p.add_argument(
        "--fig6-axis", choices=AXES, default="iterations", help="Fig. 6's x axis (default: iterations, the paper's)"
    )
    add_config_flags(p, exclude=("model", "seed"))
    p.set_defaults(func=cmd_degradation, data="fashion-mnist", out="runs/degradation")


def cmd_degradation(args: argparse.Namespace) -> int:
    overrides = flag_values(args)
    for key in ("data", "out"):
        overrides.pop(key)
    with _experiment_resume_hint(args):
        summary = run_degradation(
            args.data,
            args.depths,
            seeds=args.seeds,
            first_seed=args.first_seed,
            recipe=args.recipe,
            overrides=overrides,
            out=args.out,
            axis=args.fig6_axis,
        )
    if rank_of_this_process() != 0:  # rank 0 reports the experiment
        return 0
    print(summary_text(summary, args.data))
    print(f"outputs in {args.out}: fig6.png, table.txt, summary.json, curves.json")
    return 0


def add_grad_flow(sub: Subparsers) -> None:
    p = sub.add_parser(
        "grad-flow",
        help=SUMMARIES["grad-flow"],
        formatter_class=ShownDefaults,
    )
    p.add_argument("--model", action="append", help="a model at initialisation (repeatable)")
    p.add_argument("--checkpoint", action="append", help="a trained checkpoint (repeatable)")
    p.add_argument("--data", help="dataset of the batch (default: the checkpoint's, or 1x28x28 synthetic)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images in the one batch measured")
    p.add_argument("--seed", type=int, default=0, help="the initialisation and the batch derive from it")
    add_device(p, "cpu")
    p.add_argument("--out", default="runs/gradflow", help="folder for gradflow.json and gradflow.png")
    p.add_argument("--json", action="store_true", help="print the per-layer figures as JSON")
    p.set_defaults(func=cmd_grad_flow)


def cmd_grad_flow(args: argparse.Namespace) -> int:
    targets: list[str | Path] = [*(args.model or []), *(Path(c) for c in args.checkpoint or [])]
    if not targets:
        raise ValueError("name at least one --model (at initialisation) or --checkpoint (after training)")
    flows = [gradient_flow_for(t, args.data, args.batch_size, args.seed, args.device) for t in targets]
    figures, plot = save_gradient_flow(flows, args.out)
    if args.json:
        print_json([f.to_dict() for f in flows])
        return 0
    rows = []
    for target, f in zip(targets, flows, strict=True):
        gains = [b.gain for b in f.blocks]
        when = "trained" if isinstance(target, Path) else "init"
        ratios = [f"{r:,.0f}" if r >= 1000 else f"{r:.3g}" for r in (f.first_last_ratio, f.first_last_weight_ratio)]
        rows.append([f.model, when, *ratios, f"{min(gains):.3f}", f"{max(gains):.3f}"])
    headers = ["model", "weights", "first/last input grad", "first/last weight grad", "min block gain"]
    print(table([*headers, "max block gain"], rows))
    print("input grad: RMS of the gradient reaching a layer's input; block gain: RMS(dL/dx) / RMS(dL/dy)")
    print(f"per-layer figures: {figures}; plot: {plot}")
    return 0


def add_responses(sub: Subparsers) -> None:
    p = sub.add_parser(
        "responses",
        help=SUMMARIES["responses"],
        formatter_class=ShownDefaults,
    )
    p.add_argument("--checkpoint", action="append", required=True, help="a trained checkpoint (repeatable)")
    p.add_argument("--data", help="dataset (default: each checkpoint's own)")
    p.add_argument("--images", type=positive_int, default=512, help="test images to measure on")
    add_device(p, "cpu")
    p.add_argument("--out", default="runs/responses", help="folder for responses.json and responses.png")
    p.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="channel",
        help="a layer's std: the mean of its channels' stds, or one std over all channels",
    )
    p.add_argument("--json", action="store_true", help="print the per-layer figures as JSON")
    p.set_defaults(func=cmd_responses)


def cmd_responses(args: argparse.Namespace) -> int:
    results = responses_for_checkpoints(args.checkpoint, args.data, args.images, args.device, pooling=args.pooling)
    figures, plot = save_responses(results, args.out)
    if args.json:
        print_json([r.to_dict() for r in results])
        return 0
    rows = [
        [r.model, str(len(r.layers)), f"{statistics.fmean(x.std for x in r.layers):.3f}", f"{r.sorted[0]:.3f}"]
        for r in results
    ]
    print(table(["model", "3x3 layers", "mean std", "max std"], rows))
    print(f"per-layer figures: {figures}; plot: {plot}")
    return 0


def add_report(sub: Subparsers) -> None:
    p = sub.add_parser("report", help=SUMMARIES["report"], formatter_class=ShownDefaults)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="experiment or run folders")
    p.add_argument("--out", required=True, help="the .html file to write")
    p.add_argument("--title", help="the page's title (default: one made from the folders' names)")
    p.add_argument("--note", help="a paragraph under the title: what the runs are, what is still to do")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    path = build_report(args.dirs, args.out, args.title, args.note)
    print(f"report written to {path}")
    return 0


def add_demo(sub: Subparsers) -> None:
    p = sub.add_parser(
        "demo",
        help=SUMMARIES["demo"],
        formatter_class=ShownDefaults,
    )
    p.add_argument("--out", default="runs/demo", help="the experiment's folder")
    add_device(p, "auto")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    with _experiment_resume_hint(args):
        run_demo(args.out, args.device)
    return 0
