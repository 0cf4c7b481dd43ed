"""The `resnets` command: parses arguments and calls the library, nothing more.

Every error a user can cause (a bad name, value, file) surfaces as one line on stderr and exit
status 2; a fault of the environment (a full or read-only disk, a missing optional package, a
process of the group that died) as one line and exit status 1; a training run that diverged (a
non-finite loss or weights) as one line and exit status 3; Ctrl-C or SIGTERM as one line and
128 + the signal's number. A scheduler may retry status 1 and 128 + N; 2 and 3 fail again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import signal
import statistics
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml

from . import __version__
from .analysis import complexity
from .analysis.errors import CALIBRATION_BINS, WORST, check_output_folder, write_error_analysis
from .analysis.errors import FILES as ERROR_FILES
from .analysis.gradflow import gradient_flow_for
from .analysis.plots import AXES, plot_gradient_flow, plot_responses
from .analysis.responses import POOLINGS, responses_for_checkpoints
from .data.base import BAD_IMAGES
from .data.imagefolder import UnreadableImage
from .data.images import DEFAULT_MAX_PIXELS
from .errors import MissingExtra, is_usage_error
from .experiments.degradation import run_degradation, summary_text
from .experiments.demo import run_demo
from .export import FORMATS, export_model
from .files import atomic_write, check_output_file
from .inference import Predictor, analyse_checkpoint, evaluate_checkpoint, expand_paths
from .models import list_models, model_entry
from .models.blocks import SHORTCUTS, STRIDE_PLACEMENTS
from .models.convert import SOURCES, convert_file
from .paper import GMACS_NOTES, GMACS_SOURCES, PARAMS_SOURCES, paper_figures
from .report import build_report
from .text import human_count, printable, table
from .train import Diverged, Interrupted, TrainConfig, train
from .train.checkpoint import model_from_checkpoint, trained_metadata
from .train.config import field_help
from .train.distributed import GroupFailed, GroupMismatch, PeerFailed, RepeatedFailure, rank_of_this_process
from .train.recipes import RECIPES, get_recipe, resolve_config
from .train.rundir import run_folder_of

EXIT_USAGE = 2
EXIT_ENVIRONMENT = 1
EXIT_DIVERGED = 3
MAX_WORST = 1000  # images on one sheet of mistakes (a sheet of 1,000 thumbnails is already hard to read)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ("resnets: error: ...") rather than usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _ShownDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends with the flag's default, unless there is none to show (None, off) or the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _int_from(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {what}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    return _int_from(text, 1, "positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_from(text, 0, "non-negative integer")


def pixel_limit(text: str) -> int | None:
    """argparse type: a positive number of pixels, or none (no limit)."""
    if text.lower() in ("none", "0"):
        return None
    return positive_int(text)


def _add_pixel_limit(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-image-pixels",
        type=pixel_limit,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse larger image files undecoded (default: {DEFAULT_MAX_PIXELS:,}, Pillow's; none: no limit)",
    )


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
    print(
        "\nTwo families share names: resnet50 is the ImageNet bottleneck net (3x224x224), cifar_resnet50 the\n"
        "50-layer CIFAR net (6n+2, 3x32x32). resnetN and plainN of any other 6n+2 depth (resnet38, plain74) and\n"
        "cifar_resnetN / cifar_plainN always build the CIFAR family."
    )
    return 0


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


# ----------------------------------------------------------------------------- train, eval

# TrainConfig fields that get no flag of their own (set through --recipe, --shortcut, ...).
_NO_FLAG = {"recipe", "model_options"}


# The names that timm's and torchvision's training scripts give some of the same flags.
FLAG_ALIASES = {
    "batch_size": ("-b",),
    "num_workers": ("-j", "--workers"),
    "out": ("--output",),
    "schedule": ("--sched", "--lr-scheduler"),
    "init_from": ("--initial-checkpoint",),
    "optimizer": ("--opt",),
    "random_erasing": ("--reprob",),
    "ema": ("--model-ema-decay",),
    "randaugment": ("--aa",),
    "bce": ("--bce-loss",),
    "label_smoothing": ("--smoothing",),
    "image_size": ("--img-size",),
}
# Placeholders that say what a value is, where the field's last word would not.
METAVARS = {
    "mixup": "ALPHA",
    "cutmix": "ALPHA",
    "ema": "DECAY",
    "drop_path": "RATE",
    "random_erasing": "P",
    "clip_grad": "NORM",
    "optimizer": "NAME",
    "decode": "WHERE",
    "compile_mode": "MODE",
    "randaugment_magnitude": "M",
    "randaugment_ops": "N",
}


def _flag_help(name: str, comment: str, default: object) -> str:
    """A field's comment, other fields named by their flags, and the default recipe's value."""
    # Multi-word field names (warmup_until_err) are Python's, not words: shown as their flags.
    names = sorted((f.name for f in fields_of_config() if "_" in f.name), key=len, reverse=True)
    text = re.sub(r"\b(" + "|".join(names) + r")\b", lambda m: "--" + m.group(1).replace("_", "-"), comment)
    shown = "none" if default is None else ",".join(map(str, default)) if isinstance(default, list) else default
    return f"{text} (default: the recipe's; paper-cifar: {shown})".replace("%", "%%")


def _add_config_flags(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field, its help taken from the field's comment."""
    helps = field_help()
    defaults = get_recipe("paper-cifar", "resnet20").to_dict()
    for f in fields_of_config():
        if f.name in exclude:
            continue
        flags = ["--" + f.name.replace("_", "-"), *FLAG_ALIASES.get(f.name, ())]
        text = _flag_help(f.name, helps.get(f.name, ""), defaults[f.name])
        if f.type in ("bool", bool, "bool | None"):  # none: the flag left out (a choice left to the recipe)
            p.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif f.name == "milestones":  # 0.5 0.75 (timm's form) or 0.5,0.75
            p.add_argument(*flags, dest=f.name, nargs="+", default=None, metavar="FRACTION", help=text)
        elif f.name == "randaugment":  # timm's spec (its --aa), or alone: torchvision's levels, as before
            p.add_argument(*flags, dest=f.name, nargs="?", const="torchvision", default=None, metavar="SPEC", help=text)
        else:
            metavar = METAVARS.get(f.name, f.name.split("_")[-1].upper())
            p.add_argument(*flags, dest=f.name, default=None, metavar=metavar, help=text)
    p.add_argument("--shortcut", choices=SHORTCUTS, help="model option: shortcut type")
    p.add_argument("--stride-at", dest="stride_at_", choices=STRIDE_PLACEMENTS, help="model option: bottleneck stride")
    p.add_argument(
        "--zero-init-residual",
        dest="zero_init_residual_",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="model option: start each residual branch at zero (--no-zero-init-residual: not, where a recipe does)",
    )


def resolve_train_config(args: argparse.Namespace):
    """The run's config from the parsed `train` flags (see `resnets.train.recipes.resolve_config`)."""
    flags = {f.name: getattr(args, f.name) for f in fields_of_config() if getattr(args, f.name, None) is not None}
    resume = getattr(args, "resume", False)
    if isinstance(resume, str):  # --resume RUN or --resume RUN/checkpoints/FILE.pt: the run folder is --out
        run = run_folder_of(resume)
        if flags.get("out") and Path(flags["out"]) != run:
            raise ValueError(f"--resume {resume} belongs to {run}, not to --out {flags['out']}")
        flags["out"] = str(run)
    options = {
        name.rstrip("_"): getattr(args, name)
        for name in ("shortcut", "stride_at_", "zero_init_residual_")
        if getattr(args, name, None) is not None
    }
    return resolve_config(
        flags, recipe=args.recipe, config_file=args.config, resume=bool(resume), model_options=options
    )


def fields_of_config():
    """The TrainConfig fields that get a flag of their own."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in _NO_FLAG]


def cmd_train(args: argparse.Namespace) -> int:
    config = resolve_train_config(args)
    if args.print_config:  # the same YAML as the run's config.yaml: --config takes it back
        sys.stdout.write(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0
    try:
        result = train(config, resume=args.resume if isinstance(args.resume, bool) else Path(args.resume))
    except Interrupted as stop:
        return _fail(str(stop), 128 + stop.signum)
    except Diverged as exc:
        return _fail(str(exc), EXIT_DIVERGED)
    if rank_of_this_process() != 0:  # rank 0 reports the run
        return 0
    final = result.final
    print(
        f"done in {result.seconds:.1f} s: test error {100 * final.get('test_err', float('nan')):.2f}% "
        f"(top-5 error {100 * final.get('test_top5_err', float('nan')):.2f}%), run folder {result.run_dir}"
    )
    if final.get("ema_test_err") is not None:
        print(
            f"averaged weights (--ema): test error {100 * final['ema_test_err']:.2f}%, "
            f"in {result.run_dir / 'model-ema.safetensors'}"
        )
    print(
        f"evaluate with: resnets eval --checkpoint {result.run_dir / 'model.safetensors'} "
        f"(--out {result.run_dir / 'eval'}: where it fails)"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.ten_crop and args.multi_scale:
        raise ValueError("--ten-crop and --multi-scale are exclusive: choose one test view")
    if args.worst is not None and args.out is None:
        raise ValueError(f"--worst {args.worst} sets the images of worst.png: give --out DIR too")
    if args.worst is not None and args.worst > MAX_WORST:
        raise ValueError(f"--worst {args.worst}: worst.png shows at most {MAX_WORST:,} images")
    view = "ten_crop" if args.ten_crop else "multi_scale" if args.multi_scale else "center"
    out = check_output_folder(args.out) if args.out is not None else None  # before the work, not after it
    where = (args.checkpoint, args.data, args.data_dir, view, args.device, args.batch_size)
    options = {"allow_other_classes": args.allow_other_classes, "max_image_pixels": args.max_image_pixels}
    options["bad_images"] = args.bad_images
    if out is None and not args.json:
        result = evaluate_checkpoint(*where, **options, flip=args.flip)
        print(_eval_line(args.checkpoint, result, view))
        return 0
    worst = 0 if out is None else args.worst or WORST  # no sheet without --out: no images kept
    analysis = analyse_checkpoint(*where, **options, flip=args.flip, worst=worst)
    if out is not None:
        write_error_analysis(analysis, out)
    if args.json:
        _print_json(analysis.summary())
        return 0
    print(_eval_line(args.checkpoint, analysis, view))
    print(f"expected calibration error {100 * analysis.ece:.2f}% ({CALIBRATION_BINS} bins of confidence)")
    worst_classes = [
        f"{printable(c['class'])} {100 * c['accuracy']:.1f}% ({c['correct']}/{c['n']})"
        for c in analysis.worst_classes(3)
    ]
    print("least accurate classes: " + ", ".join(worst_classes))
    print(f"written to {out}: {', '.join(ERROR_FILES)} ({len(analysis.worst)} mistakes on the sheet)")
    return 0


def _eval_line(checkpoint: str, result, view: str) -> str:
    line = (
        f"{checkpoint}: top-1 error {100 * result.top1_err:.2f}%, top-5 error "
        f"{100 * result.top5_err:.2f}% on {result.n} test images ({view.replace('_', '-')})"
    )
    return line + unreadable_note(result.unreadable)


def unreadable_note(files: list[str]) -> str:
    """What a figure computed without some unreadable test images says beside itself."""
    if not files:
        return ""
    more = f" and {len(files) - 1} more" if len(files) > 1 else ""
    s = "s" if len(files) != 1 else ""
    return f"; {len(files)} unreadable image{s} left out ({printable(files[0])}{more})"


# ----------------------------------------------------------------------------- predict, embed, export, convert


def cmd_predict(args: argparse.Namespace) -> int:
    paths = expand_paths(args.images)
    predictor = Predictor(args.checkpoint, args.device, args.max_image_pixels)
    results = predictor.predict(paths, args.topk, args.batch_size)
    for r in results:
        if args.json:
            print(json.dumps(r.to_dict()))
        elif r.error is None:
            print(f"{printable(r.path)}: " + ", ".join(f"{printable(name)} {100 * p:.1f}%" for name, p in r.top))
        if r.error is not None:
            print(f"resnets: {printable(r.error)}", file=sys.stderr)
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"resnets: {failed} of {len(results)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


def cmd_embed(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, ".npy")  # before the work, not after it
    paths = expand_paths(args.images)
    result = Predictor(args.checkpoint, args.device, args.max_image_pixels).embed(paths, args.batch_size)
    npy, index = result.save(out)
    for f in result.failures:
        print(f"resnets: {printable(str(f.error))}", file=sys.stderr)
    rows, size = result.vectors.shape
    print(f"{rows} embeddings of size {size} written to {npy}; the file of each row in {index}")
    return 1 if result.failures else 0


def cmd_export(args: argparse.Namespace) -> int:
    model, meta = model_from_checkpoint(args.checkpoint)
    data = meta.get("data") or {}
    size = (data["in_channels"], *data["image_size"]) if "image_size" in data and "in_channels" in data else None
    extra = trained_metadata(meta)  # what the run's own model.safetensors carries
    result = export_model(model, args.format, args.out, input_size=size, check=args.check, metadata=extra)
    checked = (
        f", max abs difference {result.max_abs_diff:.2e} against PyTorch" if result.max_abs_diff is not None else ""
    )
    print(f"{args.format} written to {result.path}{checked}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    result = convert_file(args.file, args.source, args.to, verify=args.verify)
    verified = (
        f"outputs equal {args.source}'s within {result.max_abs_diff:.1e}"
        if result.max_abs_diff is not None
        else f"not verified ({args.source} not installed)"
        if args.verify
        else "not verified"
    )
    options = ", ".join(f"{k}={v!r}" for k, v in result.options.items())
    print(f"{result.path}: {result.model_name} ({options}); {verified}")
    print(f"load with: resnets.create_model({result.model_name!r}, weights={str(result.path)!r}, {options})")
    return 0


# ----------------------------------------------------------------------------- the paper's experiments


def cmd_degradation(args: argparse.Namespace) -> int:
    overrides = {f.name: getattr(args, f.name) for f in fields_of_config() if getattr(args, f.name, None) is not None}
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


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def cmd_grad_flow(args: argparse.Namespace) -> int:
    targets = [*(args.model or []), *(Path(c) for c in args.checkpoint or [])]
    if not targets:
        raise ValueError("name at least one --model (at initialisation) or --checkpoint (after training)")
    flows = [gradient_flow_for(t, args.data, args.batch_size, args.seed, args.device) for t in targets]
    out = Path(args.out)
    _write_json(out / "gradflow.json", [f.to_dict() for f in flows])
    title = "gradient reaching each layer (RMS) and gain through each block, at one batch"
    plot_gradient_flow(flows, out / "gradflow.png", title=title)
    if args.json:
        _print_json([f.to_dict() for f in flows])
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
    print(f"per-layer figures: {out / 'gradflow.json'}; plot: {out / 'gradflow.png'}")
    return 0


def cmd_responses(args: argparse.Namespace) -> int:
    results = responses_for_checkpoints(args.checkpoint, args.data, args.images, args.device, pooling=args.pooling)
    out = Path(args.out)
    _write_json(out / "responses.json", [r.to_dict() for r in results])
    plot_responses(results, out / "responses.png", title="std of 3x3 layer responses (Fig. 7)")
    if args.json:
        _print_json([r.to_dict() for r in results])
        return 0
    rows = [
        [r.model, str(len(r.layers)), f"{statistics.fmean(x.std for x in r.layers):.3f}", f"{r.sorted[0]:.3f}"]
        for r in results
    ]
    print(table(["model", "3x3 layers", "mean std", "max std"], rows))
    print(f"per-layer figures: {out / 'responses.json'}; plot: {out / 'responses.png'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    path = build_report(args.dirs, args.out, args.title, args.note)
    print(f"report written to {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    with _experiment_resume_hint(args):
        run_demo(args.out, args.device)
    return 0


class _ExperimentStopped(Exception):
    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@contextmanager
def _experiment_resume_hint(args: argparse.Namespace):
    """An experiment is many runs: a stop is resumed by running the same command, not one model's run."""
    try:
        yield
    except Interrupted as stop:
        command = "resnets " + shlex.join(args.argv)
        raise _ExperimentStopped(
            f"{stop.what}; runs that finished are kept: resume the whole experiment "
            f"by running the same command again: {command}",
            stop.signum,
        ) from None


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="resnets", description="Deep residual networks (He et al., CVPR 2016).")
    parser.add_argument("--version", action="version", version=f"resnets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    shown = {"formatter_class": _ShownDefaults}  # help shows each flag's default

    p = sub.add_parser("models", help="list every registered model with its parameters and GMACs", **shown)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print a JSON list on stdout")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("flops", help="parameters and multiply-adds of one model, per stage", **shown)
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

    p = sub.add_parser("train", help="train a model (see --recipe); resumes an interrupted run in --out")
    p.add_argument("--recipe", help=f"one of {', '.join(RECIPES)} (default: paper-cifar)")
    p.add_argument("--config", help="YAML file of config values (command-line flags win)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_OR_CHECKPOINT",
        help="continue the run in --out, or in this run folder, or from this checkpoint file "
        "(an error if there is nothing to resume)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the run's whole config (the recipe's, then --config's, then the flags') as YAML, and stop",
    )
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="top-1/top-5 test error of a checkpoint; with --out, where it fails", **shown)
    p.add_argument("--checkpoint", required=True, help="a checkpoint .pt or a run's model.safetensors")
    p.add_argument("--data", help="dataset (default: the one it was trained on)")
    p.add_argument("--data-dir", help="where the dataset's files are (default: the usual places)")
    p.add_argument("--ten-crop", action="store_true", help="average 10 crops (corners, centre, flips)")
    p.add_argument("--multi-scale", action="store_true", help="fully convolutional, 5 scales (image folders)")
    p.add_argument("--flip", action="store_true", help="also average each view's mirror image (not in the paper)")
    p.add_argument("--batch-size", type=positive_int, help="images per batch (default: the run's eval batch)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, mps")
    p.add_argument(
        "--bad-images",
        choices=BAD_IMAGES,
        default="skip",
        help="an unreadable test image: left out, counted and named beside the errors (skip), or an error (fail)",
    )
    p.add_argument(
        "--allow-other-classes",
        action="store_true",
        help="evaluate on a dataset whose class names differ from the checkpoint's (labels compared by index)",
    )
    _add_pixel_limit(p)
    p.add_argument(
        "--out",
        metavar="DIR",
        help="also write where the model fails into DIR: eval.json (accuracy per class, confusion matrix, "
        "calibration), confusion.png, reliability.png, worst.png",
    )
    p.add_argument(
        "--worst",
        type=positive_int,
        metavar="K",
        help=f"misclassified images of highest confidence on worst.png (default: {WORST}; needs --out)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print {top1_err, top5_err, loss, n, ece, per_class} as JSON on stdout",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("experiment", help="the paper's experiments")
    experiments = p.add_subparsers(dest="experiment", required=True, parser_class=_Parser)
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
    _add_config_flags(p, exclude=("model", "seed"))
    p.set_defaults(func=cmd_degradation, data="fashion-mnist", out="runs/degradation")

    p = sub.add_parser(
        "grad-flow", help="gradient reaching each layer (RMS), weight gradients, each block's gain", **shown
    )
    p.add_argument("--model", action="append", help="a model at initialisation (repeatable)")
    p.add_argument("--checkpoint", action="append", help="a trained checkpoint (repeatable)")
    p.add_argument("--data", help="dataset of the batch (default: the checkpoint's, or 1x28x28 synthetic)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images in the one batch measured")
    p.add_argument("--seed", type=int, default=0, help="the initialisation and the batch derive from it")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, mps")
    p.add_argument("--out", default="runs/gradflow", help="folder for gradflow.json and gradflow.png")
    p.add_argument("--json", action="store_true", help="print the per-layer figures as JSON")
    p.set_defaults(func=cmd_grad_flow)

    p = sub.add_parser("responses", help="std of each 3x3 layer's response, plain against residual (Fig. 7)", **shown)
    p.add_argument("--checkpoint", action="append", required=True, help="a trained checkpoint (repeatable)")
    p.add_argument("--data", help="dataset (default: each checkpoint's own)")
    p.add_argument("--images", type=positive_int, default=512, help="test images to measure on")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, mps")
    p.add_argument("--out", default="runs/responses", help="folder for responses.json and responses.png")
    p.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="channel",
        help="a layer's std: the mean of its channels' stds, or one std over all channels",
    )
    p.add_argument("--json", action="store_true", help="print the per-layer figures as JSON")
    p.set_defaults(func=cmd_responses)

    p = sub.add_parser("report", help="one self-contained HTML page of runs and experiments", **shown)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="experiment or run folders")
    p.add_argument("--out", required=True, help="the .html file to write")
    p.add_argument("--title", help="the page's title (default: one made from the folders' names)")
    p.add_argument("--note", help="a paragraph under the title: what the runs are, what is still to do")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("predict", help="top-k classes of image files with a trained checkpoint", **shown)
    p.add_argument("--checkpoint", required=True, help="a checkpoint .pt or a run's model.safetensors")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders searched for them")
    p.add_argument("--topk", type=positive_int, default=5, help="classes shown per image")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, mps")
    _add_pixel_limit(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("embed", help="pre-logits embeddings of image files, saved as .npy", **shown)
    p.add_argument("--checkpoint", required=True, help="a checkpoint .pt or a run's model.safetensors")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders searched for them")
    p.add_argument(
        "--out", required=True, help="the .npy file to write (N, num_features); OUT.paths.json lists each row's file"
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, mps")
    _add_pixel_limit(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "export", help="ONNX, TorchScript, torch.export or safetensors, checked against PyTorch", **shown
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoint .pt or a run's model.safetensors")
    p.add_argument("--format", required=True, choices=FORMATS, help="the artefact's format")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the export and PyTorch on one batch; fail over 1e-4 times the outputs' scale",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("convert", help="a torchvision or timm ResNet state dict to resnets safetensors", **shown)
    p.add_argument("file", help="the .pth/.pt/.safetensors state dict")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="the library the file comes from")
    p.add_argument("--to", required=True, help="OUT.safetensors")
    p.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare outputs with the source library's model (when installed)",
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "demo", help="the degradation problem on Fashion-MNIST: plain/ResNet 20 and 56 (make demo)", **shown
    )
    p.add_argument("--out", default="runs/demo", help="the experiment's folder")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, mps")
    p.set_defaults(func=cmd_demo)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside a training run: unwind (closing files, releasing locks) as Ctrl-C does."""

    signum = signal.SIGTERM


def _terminate(signum, _frame) -> None:
    raise _Terminated


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library warning as one line, "resnets: warning: ...", without Python's source location (rank 0's
    alone in a group: the processes meet the same warnings)."""
    if rank_of_this_process() == 0:
        print(printable(f"resnets: warning: {message}"), file=sys.stderr)


def _fail(message: str, status: int, every_process: bool = False) -> int:
    """Print one line and return `status`. In a group (torchrun) every process meets the same bad
    value, signal or divergence, so rank 0 alone says it; an environment error (a file, the disk)
    may be one process's own, and each says it with its rank."""
    rank = rank_of_this_process()
    if rank == 0:
        print(printable(f"resnets: {message}".splitlines()[0]), file=sys.stderr)
    elif every_process:
        print(printable(f"resnets: rank {rank}: {message}".splitlines()[0]), file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    func: Callable[[argparse.Namespace], int] = args.func

    restore = None
    if threading.current_thread() is threading.main_thread():
        restore = signal.signal(signal.SIGTERM, _terminate)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return func(args)
    except Interrupted as stop:
        return _fail(str(stop), 128 + stop.signum)
    except _ExperimentStopped as stop:
        return _fail(str(stop), 128 + stop.signum)
    except Diverged as exc:
        return _fail(str(exc), EXIT_DIVERGED)
    except RepeatedFailure as exc:
        return _fail(f"error: {exc}", EXIT_DIVERGED if exc.kind == "diverged" else EXIT_USAGE)
    except (GroupMismatch, UnreadableImage) as exc:  # each process's own: every one says it
        return _fail(f"error: {exc}", EXIT_USAGE, every_process=True)
    except GroupFailed as exc:
        return _fail(f"error: {exc}", EXIT_ENVIRONMENT, every_process=True)
    except PeerFailed as exc:
        return _fail(f"error: {exc}", EXIT_ENVIRONMENT)
    except BrokenPipeError:  # `resnets ... | head` closed the pipe: stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        return _fail(f"{name}: stopped; files already written are intact", 128 + signum)
    except MissingExtra as exc:  # the environment lacks an optional package
        return _fail(f"error: {exc}", EXIT_ENVIRONMENT)
    except ValueError as exc:  # every bad name, value or file is a ValueError (CheckpointError, ImageError, ...)
        return _fail(f"error: {exc}", EXIT_USAGE)
    except OSError as exc:
        text = str(exc) if exc.strerror is None else f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        status = EXIT_USAGE if is_usage_error(exc) else EXIT_ENVIRONMENT
        return _fail(f"error: {text}", status, every_process=True)
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)


if __name__ == "__main__":
    sys.exit(main())
