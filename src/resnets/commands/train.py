"""`resnets train`: one flag per TrainConfig field, grouped as timm's train.py groups its flags."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

import yaml

from ..data import DATASETS
from ..models.blocks import SHORTCUTS, STRIDE_PLACEMENTS
from ..train import TrainConfig, train
from ..train.config import CHOICES, DEVICES, field_help
from ..train.distributed import rank_of_this_process
from ..train.recipes import RECIPES, get_recipe, resolve_config
from ..train.rundir import run_folder_of
from .arguments import Subparsers

# TrainConfig fields that get no flag of their own (set through --recipe, --shortcut, ...).
_NO_FLAG = {"recipe", "model_options"}

# The flags of `train --help` by group: each TrainConfig field (and each model option) in exactly one.
GROUPS: dict[str, tuple[str, ...]] = {
    "data": (
        "data", "data_dir", "subset", "val_split", "test_subset", "normalize", "crop", "interpolation",
        "image_size", "test_size", "test_resize", "tta_flip", "num_workers", "decode", "bad_images",
        "max_image_pixels",
    ),
    "model": ("model", "num_classes", "init_from", "freeze_backbone", "zero_init_residual"),
    "optimisation": (
        "optimizer", "lr", "lr_base_scale", "momentum", "nesterov", "weight_decay", "decay_norm_bias",
        "clip_grad", "batch_size", "accumulate", "ema", "ema_warmup",
    ),
    "schedule": (
        "epochs", "iterations", "schedule", "milestones", "gamma", "plateau_patience", "onecycle_warmup",
        "warmup_epochs", "min_lr",
    ),
    "regularisation": (
        "augment", "color_jitter", "lighting", "randaugment", "randaugment_ops", "randaugment_magnitude",
        "randaugment_std", "trivialaugment", "random_erasing", "repeated_aug", "mixup", "cutmix",
        "label_smoothing", "bce", "bce_target_thresh", "drop_path",
    ),
    "the paper's options": ("shortcut", "stride_at", "init", "warmup_lr", "warmup_until_err"),
    "runtime": (
        "seed", "device", "amp", "channels_last", "compile", "compile_mode", "cuda_graphs", "sync_bn",
        "dist_timeout", "eval_batch_size",
    ),
    "logging": ("out", "keep", "checkpoint_every", "log_every", "tensorboard", "mlflow"),
}  # fmt: skip
# create_model options a run passes through TrainConfig.model_options, not fields of their own.
MODEL_OPTIONS = ("shortcut", "stride_at", "zero_init_residual")
# Fields whose values are checked where they are used (the data loader, the device), not against a
# closed list: their help names the accepted forms, and argparse takes any value.
OPEN_CHOICES: dict[str, tuple[str, ...]] = {"data": DATASETS, "device": DEVICES}

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


def add_train(sub: Subparsers) -> None:
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
    add_config_flags(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    config = resolve_train_config(args)
    if args.print_config:  # the same YAML as the run's config.yaml: --config takes it back
        sys.stdout.write(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0
    result = train(config, resume=args.resume if isinstance(args.resume, bool) else Path(args.resume))
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


def fields_of_config() -> list[dataclasses.Field]:
    """The TrainConfig fields that get a flag of their own."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in _NO_FLAG]


def flag_values(args: argparse.Namespace) -> dict:
    """The TrainConfig fields that the command line set, by name."""
    return {f.name: getattr(args, f.name) for f in fields_of_config() if getattr(args, f.name, None) is not None}


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config from the parsed `train` flags (see `resnets.train.recipes.resolve_config`)."""
    flags = flag_values(args)
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


def add_config_flags(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field, its help taken from the field's comment, in the groups of GROUPS."""
    helps = field_help()
    defaults = get_recipe("paper-cifar", "resnet20").to_dict()
    fields = {f.name: f for f in fields_of_config() if f.name not in exclude}
    for title, names in GROUPS.items():
        group = p.add_argument_group(title)
        for name in names:
            if name in MODEL_OPTIONS:
                _add_model_option(group, name)
            elif name in fields:
                field = fields.pop(name)
                _add_field_flag(group, field, _flag_help(name, helps.get(name, ""), defaults[name]))
    for name, field in fields.items():  # a field of no group: still a flag (a test requires a group)
        _add_field_flag(p, field, _flag_help(name, helps.get(name, ""), defaults[name]))


def _add_field_flag(p: argparse._ActionsContainer, f: dataclasses.Field, text: str) -> None:
    flags = ["--" + f.name.replace("_", "-"), *FLAG_ALIASES.get(f.name, ())]
    if f.type in ("bool", bool, "bool | None"):  # none: the flag left out (a choice left to the recipe)
        p.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
    elif f.name == "milestones":  # 0.5 0.75 (timm's form) or 0.5,0.75
        p.add_argument(*flags, dest=f.name, nargs="+", default=None, metavar="FRACTION", help=text)
    elif f.name == "randaugment":  # timm's spec (its --aa), or alone: torchvision's levels, as before
        p.add_argument(*flags, dest=f.name, nargs="?", const="torchvision", default=None, metavar="SPEC", help=text)
    else:
        metavar = METAVARS.get(f.name, f.name.split("_")[-1].upper())
        choices = CHOICES.get(f.name)
        if choices is not None and "None" in str(f.type):  # an optional field: none leaves it to its rule
            choices = (*choices, "none")
        p.add_argument(*flags, dest=f.name, default=None, metavar=metavar, choices=choices, help=text)


def _add_model_option(p: argparse._ActionsContainer, name: str) -> None:
    if name == "shortcut":
        p.add_argument("--shortcut", choices=SHORTCUTS, help="model option: shortcut type")
    elif name == "stride_at":
        p.add_argument(
            "--stride-at", dest="stride_at_", choices=STRIDE_PLACEMENTS, help="model option: bottleneck stride"
        )
    elif name == "zero_init_residual":
        p.add_argument(
            "--zero-init-residual",
            dest="zero_init_residual_",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="model option: start each residual branch at zero (--no-zero-init-residual: not, where a recipe does)",
        )


def _flag_help(name: str, comment: str, default: object) -> str:
    """A field's comment, other fields named by their flags, its accepted values, and the default recipe's value."""
    # Multi-word field names (warmup_until_err) are Python's, not words: shown as their flags.
    names = sorted((f.name for f in fields_of_config() if "_" in f.name), key=len, reverse=True)
    text = re.sub(r"\b(" + "|".join(names) + r")\b", lambda m: "--" + m.group(1).replace("_", "-"), comment)
    accepted = CHOICES.get(name) or OPEN_CHOICES.get(name)
    if accepted:
        text += f"; one of {', '.join(accepted)}"
    shown = "none" if default is None else ",".join(map(str, default)) if isinstance(default, list) else default
    return f"{text} (default: the recipe's; paper-cifar: {shown})".replace("%", "%%")
