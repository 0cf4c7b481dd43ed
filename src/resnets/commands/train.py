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
from ..train.config import CHOICES, DEVICES, EMA_DECAY, PRETRAINED, field_help
from ..train.distributed import rank_of_this_process
from ..train.metrics import shows_top5
from ..train.recipes import RECIPES, get_recipe, resolve_config
from ..train.rundir import run_folder_of
from . import SUMMARIES
from .arguments import Subparsers, positive_int

# TrainConfig fields that get no flag of their own (set through --recipe, --shortcut, ...).
_NO_FLAG = {"recipe", "model_options"}

# The flags of `train --help` by group: each TrainConfig field (and each model option) in exactly one.
GROUPS: dict[str, tuple[str, ...]] = {
    "data": (
        "data", "data_dir", "subset", "val_split", "test_subset", "normalize", "crop", "scale_range",
        "interpolation", "image_size", "test_size", "test_resize", "tta_flip", "num_workers", "decode", "bad_images",
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

# The names that timm's and torchvision's training scripts give some of the same flags, meaning the same.
FLAG_ALIASES = {
    "batch_size": ("-b",),
    "num_workers": ("-j", "--workers"),
    "out": ("--output",),
    "schedule": ("--lr-scheduler",),  # timm's --sched names some schedules otherwise: TIMM_VALUES
    "init_from": ("--initial-checkpoint", "--pretrained-path"),
    "random_erasing": ("--reprob",),
    "ema": ("--model-ema-decay",),
    "ema_warmup": ("--model-ema-warmup",),
    "randaugment": ("--aa",),
    "bce": ("--bce-loss",),
    "label_smoothing": ("--smoothing",),
    "image_size": ("--img-size",),
    "weight_decay": ("--wd",),
    "log_every": ("--log-interval",),
    "checkpoint_every": ("--recovery-interval",),
    "gamma": ("--decay-rate", "--dr"),
    "plateau_patience": ("--patience-epochs",),
    "eval_batch_size": ("-vb", "--validation-batch-size"),
    "repeated_aug": ("--aug-repeats",),
}
# timm's --sched and --opt: each value that means what a value of resnets' does sets it (and --opt nesterov
# the Nesterov momentum too); a value that means something else here is refused with the flags to write.
TIMM_VALUES: dict[str, tuple[str, dict[str, dict], dict[str, str]]] = {
    "schedule": (
        "--sched",
        {"cosine": {"schedule": "cosine"}, "plateau": {"schedule": "plateau"}, "multistep": {"schedule": "step"}},
        {
            "step": "--sched step is timm's decay every --decay-epochs; resnets' --schedule step divides the lr at "
            "--milestones, timm's --sched multistep"
        },
    ),
    "optimizer": (
        "--opt",
        {
            "momentum": {"optimizer": "sgd"},
            "nesterov": {"optimizer": "sgd", "nesterov": True},
            **{name: {"optimizer": name} for name in ("adamw", "lamb", "lars")},
        },
        {
            "sgd": "--opt sgd is timm's SGD with Nesterov momentum: write --opt nesterov (or --opt momentum for "
            "plain momentum, the paper's)"
        },
    ),
}
# timm's flags that resnets lacks or means otherwise by that name: each refused with one line naming the
# nearest option (train.py of timm 1.0; "{flag}" is the flag given).
TIMM_REFUSED: dict[tuple[str, ...], str] = {
    ("--drop",): "--drop is timm's classifier dropout, which resnets does not have; the nearest is --drop-path",
    ("--drop-connect",): "--drop-connect is timm's old name of --drop-path: use --drop-path",
    ("--drop-block",): "--drop-block (timm's DropBlock) is not built; the nearest is --drop-path",
    ("--decay-epochs",): "--decay-epochs is the interval of timm's step schedule; resnets' --schedule step divides "
    "the lr by --gamma at --milestones, fractions of the run",
    ("--decay-milestones",): "--decay-milestones are epochs in timm; resnets' --milestones are fractions of the run "
    "(epochs 30 60 of 90: --milestones 0.333 0.667)",
    ("--cooldown-epochs",): "--cooldown-epochs (timm: epochs at --min-lr after the schedule) is not built; the "
    "cosine reaches --min-lr at the last step",
    ("--mixup-off-epoch",): "--mixup-off-epoch (timm: no mixup after epoch N) is not built; --mixup and --cutmix "
    "last the whole run",
    ("--mixup-prob", "--mixup-switch-prob", "--mixup-mode", "--cutmix-minmax"): "{flag} is not an option: with "
    "--mixup or --cutmix every batch is mixed, half of them each way when both are on (timm's defaults)",
    ("--clip-mode",): "--clip-mode is not an option: --clip-grad NORM clips the global gradient norm (timm's "
    "default mode)",
    ("--opt-eps", "--opt-betas"): "{flag} is not an option: AdamW and LAMB take betas (0.9, 0.999) and their "
    "own eps, timm's defaults",
    ("--layer-decay",): "--layer-decay (timm's layer-wise lr decay) is not built",
    ("--lr-base", "--lr-base-size"): "{flag} is not an option: --lr is the lr of the run's batch (a recipe's own "
    "is scaled to --batch-size as --lr-base-scale says)",
    ("--crop-pct",): "--crop-pct is timm's test crop ratio: give the sides, --test-size S --test-resize R "
    "(0.95 at 224: --test-resize 235)",
    ("--input-size",): "--input-size is timm's C H W: the channels come from --data, the crop's side from "
    "--img-size and the test view's from --test-size",
    ("--train-interpolation",): "--train-interpolation is not separate: --interpolation sets the training crops "
    "and the test view (random: bilinear or bicubic at random, timm's training default)",
    ("--mean", "--std"): "{flag} is not an option: --normalize takes the statistics of the training images",
    ("--torchcompile",): "--torchcompile is --compile here (inductor; --compile-mode sets its mode)",
    ("--amp-dtype",): "--amp-dtype is not an option: --amp is bfloat16 autocast on CUDA",
    ("--checkpoint-hist",): "--checkpoint-hist keeps timm's N best checkpoints; resnets keeps the newest "
    "--keep N, and best.pt",
    ("--experiment",): "--experiment names timm's run folder inside --output: give the run folder itself, --out PATH",
    ("--dataset",): f"--dataset is --data here: one of {', '.join(DATASETS)}",
    ("--tta",): "--tta is timm's number of test views: resnets has --tta-flip (each test image and its mirror)",
    ("--log-wandb",): "--log-wandb: Weights & Biases is not built; --tensorboard or --mlflow log the run",
    ("--no-resume-opt",): "--no-resume-opt is not an option: --resume restores the whole state, --init-from "
    "the weights alone",
    ("--start-epoch",): "--start-epoch is not an option: --resume goes on from the run's own epoch",
    ("--dist-bn",): "--dist-bn is not built: --sync-bn computes BatchNorm statistics over the global batch",
    ("--bn-momentum", "--bn-eps"): "{flag} is not an option: BatchNorm takes torch's defaults",
    ("--gp",): "--gp is not an option: the networks pool by global average (the paper's)",
    ("--in-chans",): "--in-chans is not an option: the input channels come from --data",
    ("--aug-splits", "--jsd-loss", "--split-bn"): "{flag} (timm's AugMix splits) is not built",
    ("--remode", "--recount", "--resplit"): "{flag} is not an option: random erasing fills one box of an image "
    "with per-pixel noise (timm's defaults); --reprob P sets its probability",
    ("--scale", "--ratio"): "{flag} is not an option: --crop random-resized takes Inception's area 8-100% (35-100% "
    "for crops under 64 pixels) and aspect ratio 3/4-4/3 (timm's defaults); --scale-range LO HI sets --crop scale's",
    ("--hflip", "--vflip"): "{flag} is not an option: training flips half the images left to right (--no-augment: "
    "none), never upside down",
    ("--model-ema-force-cpu",): "--model-ema-force-cpu is not built: the average of the weights (--ema DECAY) "
    "stays on the training device",
    ("--sched-on-updates",): "--sched-on-updates is always so here (the lr changes at every step): leave it out",
    ("--warmup-prefix",): "--warmup-prefix is always so here (the cosine starts after --warmup-epochs): leave it out",
    ("--epoch-repeats",): "--epoch-repeats is not built: --epochs or --iterations set the length",
    ("--lr-noise", "--lr-cycle-mul", "--lr-cycle-decay", "--lr-cycle-limit", "--lr-k-decay"): "{flag} is not "
    "built: the schedules are --schedule's, one of " + ", ".join(CHOICES["schedule"]),
}
# AutoAugment's and AugMix's names that timm's --aa takes beside its RandAugment specs (rand-...).
TIMM_AUTOAUGMENT = ("original", "originalr", "v0", "v0r", "3a", "augmix")
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
    p = sub.add_parser("train", help=SUMMARIES["train"])
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
    add_config_flags(p, timm=True)
    p.epilog = (
        "timm's flags that resnets lacks, or means otherwise by that name (--drop, --decay-epochs, --crop-pct, ...), "
        "are refused with the option to use instead."
    )
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    config = resolve_train_config(args)
    if args.print_config:  # the same YAML as the run's config.yaml: --config takes it back
        sys.stdout.write(yaml.safe_dump(config.resolved().to_dict(), sort_keys=False))
        return 0
    if getattr(args, "grad_accum_steps", None) and rank_of_this_process() == 0:
        k, batch = config.accumulate, config.batch_size
        print(
            f"--grad-accum-steps {k} (timm's): steps of {batch} images, each {k} micro-batches of {batch // k} "
            f"(resnets' --batch-size {batch} --accumulate {k})",
            file=sys.stderr,
        )
    result = train(config, resume=args.resume if isinstance(args.resume, bool) else Path(args.resume))
    if rank_of_this_process() != 0:  # rank 0 reports the run
        return 0
    final = result.final
    top5 = (
        f" (top-5 error {100 * final.get('test_top5_err', float('nan')):.2f}%)"
        if shows_top5(len(result.class_names) or None)
        else ""
    )
    print(
        f"done in {result.seconds:.1f} s: test error {100 * final.get('test_err', float('nan')):.2f}%{top5}, "
        f"run folder {result.run_dir}"
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

    def resolve(values: dict) -> TrainConfig:
        return resolve_config(
            values, recipe=args.recipe, config_file=args.config, resume=bool(resume), model_options=options
        )

    if getattr(args, "model_ema", False):  # timm's switch: its decay, unless --model-ema-decay gives one
        flags.setdefault("ema", EMA_DECAY)
    config = resolve(flags)
    steps = getattr(args, "grad_accum_steps", None)
    if steps is not None:  # timm's: a step adds the gradients of K batches of -b images each
        if "accumulate" in flags:
            raise ValueError("--grad-accum-steps (timm's) and --accumulate (resnets') both split the batch: give one")
        config = resolve({**flags, "batch_size": config.batch_size * steps, "accumulate": steps})  # -b or the recipe's
    return config


def add_config_flags(p: argparse.ArgumentParser, exclude: tuple[str, ...] = (), timm: bool = False) -> None:
    """One flag per TrainConfig field, its help taken from the field's comment, in the groups of GROUPS.

    Each field takes timm's name of it too (FLAG_ALIASES, TIMM_VALUES). With `timm`, also timm's switches that
    `resolve_train_config` translates (--grad-accum-steps, --model-ema) and the refusals of TIMM_REFUSED.
    """
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
                _add_timm_flag(group, name, timm)
    for name, field in fields.items():  # a field of no group: still a flag (a test requires a group)
        _add_field_flag(p, field, _flag_help(name, helps.get(name, ""), defaults[name]))
    if timm:
        for flags, why in TIMM_REFUSED.items():
            for flag in flags:
                p.add_argument(flag, action=_Refused, why=why.format(flag=flag))


def refuse(parser: argparse.ArgumentParser, message: str) -> None:
    """Stop with `message` as the command's other errors end: "resnets: error: ...", exit status 2 (argparse's)."""
    parser.exit(2, f"{parser.prog.split()[0]}: error: {message}\n")


class _Refused(argparse.Action):
    """A timm flag that resnets lacks, or means otherwise: one line naming the option to use (not in --help)."""

    def __init__(self, option_strings: list[str], dest: str, why: str, **kwargs) -> None:
        super().__init__(
            option_strings, argparse.SUPPRESS, nargs="*", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        refuse(parser, self.why)


class _TimmValues(argparse.Action):
    """timm's --sched or --opt: a value meaning what one of resnets' does sets the fields; any other is one line."""

    def __init__(self, option_strings: list[str], dest: str, taken: dict, refused: dict, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.taken, self.refused = taken, refused

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values in self.refused:
            refuse(parser, self.refused[values])
        if values not in self.taken:
            refuse(
                parser,
                f"{option_string} {values!r} is not one of timm's names that resnets takes: {', '.join(self.taken)}",
            )
        for name, value in self.taken[values].items():
            setattr(namespace, name, value)


def randaugment_spec(text: str) -> str:
    """argparse type of --randaugment/--aa: timm's AutoAugment and AugMix names are refused, as not built.

    >>> randaugment_spec("rand-m9-mstd0.5")
    'rand-m9-mstd0.5'
    """
    name = text.split("-")[0]
    if name in TIMM_AUTOAUGMENT:
        what = "AugMix" if name == "augmix" else "AutoAugment"
        raise argparse.ArgumentTypeError(
            f"{text!r} is timm's {what}, which is not built: give a RandAugment spec (rand-m9-mstd0.5-inc1, ...), "
            "torchvision, or --trivialaugment"
        )
    return text


def _add_timm_flag(p: argparse._ActionsContainer, name: str, timm: bool) -> None:
    """timm's flags for field `name` that are not another name of its flag (see `add_config_flags`)."""
    if name in TIMM_VALUES:
        flag, taken, refused = TIMM_VALUES[name]
        # Each value with the resnets flags it stands for: multistep (--schedule step), nesterov (... --nesterov).
        names = ", ".join(
            f"{k} ({' '.join(f'--{f}' if v is True else f'--{f} {v}' for f, v in fields.items())})"
            for k, fields in taken.items()
        )
        p.add_argument(
            flag,
            dest=name,
            action=_TimmValues,
            taken=taken,
            refused=refused,
            metavar="NAME",
            help=f"timm's names: {names}; timm's {', '.join(refused)} is refused: it means otherwise",
        )
    elif name == "init_from":
        p.add_argument(
            "--pretrained",
            dest=name,
            action="store_const",
            const=PRETRAINED,
            help=f"start from torchvision's ImageNet weights for --model (--init-from {PRETRAINED}; timm's)",
        )
    elif name == "augment":
        p.add_argument("--no-aug", dest=name, action="store_const", const=False, help="timm's name of --no-augment")
    elif name == "ema" and timm:
        p.add_argument(
            "--model-ema",
            action="store_true",
            help=f"timm's switch: an average of the weights, of decay --model-ema-decay, else timm's {EMA_DECAY} "
            f"(--ema {EMA_DECAY})",
        )
    elif name == "accumulate" and timm:
        p.add_argument(
            "--grad-accum-steps",
            type=positive_int,
            metavar="K",
            help="timm's: each step adds the gradients of K batches of --batch-size B images (resnets' "
            "--batch-size KxB --accumulate K)",
        )


def _add_field_flag(p: argparse._ActionsContainer, f: dataclasses.Field, text: str) -> None:
    flags = ["--" + f.name.replace("_", "-"), *FLAG_ALIASES.get(f.name, ())]
    if f.type in ("bool", bool, "bool | None"):  # none: the flag left out (a choice left to the recipe)
        p.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
    elif f.name == "scale_range":  # two sides, LO HI
        p.add_argument(*flags, dest=f.name, nargs=2, type=int, default=None, metavar=("LO", "HI"), help=text)
    elif f.name == "milestones":  # 0.5 0.75 (timm's form) or 0.5,0.75
        p.add_argument(*flags, dest=f.name, nargs="+", default=None, metavar="FRACTION", help=text)
    elif f.name == "randaugment":  # timm's spec (its --aa), or alone: torchvision's levels, as before
        p.add_argument(
            *flags,
            dest=f.name,
            nargs="?",
            const="torchvision",
            default=None,
            metavar="SPEC",
            type=randaugment_spec,
            help=text,
        )
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
    if name == "epochs" and (length := get_recipe("paper-cifar", "resnet20").iterations) is not None:
        shown = f"none, {length:,} iterations"  # the length that the default recipe trains for
    return f"{text} (default: the recipe's; paper-cifar: {shown})".replace("%", "%%")
