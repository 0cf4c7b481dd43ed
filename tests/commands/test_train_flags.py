"""`resnets train` as a timm user types it: timm's names where they mean the same, one line where they do not."""

import pytest

from resnets.cli import build_parser, main
from resnets.commands.train import TIMM_REFUSED, resolve_train_config
from resnets.train.config import EMA_DECAY


def parse(*argv: str):
    return resolve_train_config(build_parser().parse_args(["train", *argv]))


def error_line(capsys, *argv: str) -> str:
    """The one line that `resnets train ARGV --print-config` fails with (exit status 2: argparse's or main's)."""
    try:
        status = main(["train", *argv, "--print-config"])
    except SystemExit as stop:
        status = stop.code
    assert status == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_timms_names_set_the_same_fields_as_resnets_own():
    timm = parse(
        "--smoothing", "0.1", "--wd", "5e-5", "--log-interval", "7", "--min-lr", "1e-5", "--sched", "cosine",
        "--warmup-lr", "1e-3", "--warmup-epochs", "1", "--epochs", "3", "--decay-rate", "0.5",
        "--aa", "rand-m9-mstd0.5", "-vb", "256", "--recovery-interval", "5", "--model-ema-warmup", "--model-ema",
    )  # fmt: skip
    own = parse(
        "--label-smoothing", "0.1", "--weight-decay", "5e-5", "--log-every", "7", "--min-lr", "1e-5",
        "--schedule", "cosine", "--warmup-lr", "1e-3", "--warmup-epochs", "1", "--epochs", "3", "--gamma", "0.5",
        "--randaugment", "rand-m9-mstd0.5", "--eval-batch-size", "256", "--checkpoint-every", "5", "--ema-warmup",
        "--ema", str(EMA_DECAY),
    )  # fmt: skip
    assert timm == own
    assert (timm.label_smoothing, timm.weight_decay, timm.log_every, timm.gamma) == (0.1, 5e-5, 7, 0.5)
    assert (timm.min_lr, timm.warmup_lr, timm.eval_batch_size, timm.checkpoint_every) == (1e-5, 1e-3, 256, 5)
    assert (timm.ema, timm.ema_warmup) == (0.9998, True)
    policy = timm.randaugment_policy  # timm's rand-m9-mstd0.5: magnitude 9, its std 0.5, two ops
    assert (policy.magnitude, policy.std, policy.ops) == (9.0, 0.5, 2)
    assert parse("--img-size", "64", "--data", "imagefolder:/x").image_size == 64
    assert parse("--no-aug").augment is False


def test_model_ema_takes_timms_decay_or_the_one_given():
    assert parse("--model-ema").ema == 0.9998
    assert parse("--model-ema", "--model-ema-decay", "0.99").ema == 0.99
    assert parse("--model-ema-decay", "0.99", "--model-ema").ema == 0.99  # the order does not matter
    assert parse().ema is None


def test_sched_and_opt_take_timms_values_that_mean_what_resnets_do():
    assert parse("--sched", "multistep").schedule == "step"  # timm's multistep: the paper's milestones
    assert parse("--sched", "plateau").schedule == "plateau"
    assert (parse("--opt", "momentum").optimizer, parse("--opt", "momentum").nesterov) == ("sgd", False)
    assert (parse("--opt", "nesterov").optimizer, parse("--opt", "nesterov").nesterov) == ("sgd", True)
    assert parse("--opt", "lamb").optimizer == "lamb"


def test_grad_accum_steps_multiplies_the_batch_as_timm_does():
    """timm's -b 64 --grad-accum-steps 4: an optimizer step of 256 images, in micro-batches of 64."""
    config = parse("-b", "64", "--grad-accum-steps", "4")
    assert (config.batch_size, config.accumulate) == (256, 4)
    config = parse("--grad-accum-steps", "2")  # the recipe's batch (paper-cifar: 128) is the micro-batch
    assert (config.batch_size, config.accumulate) == (256, 2)
    # A recipe whose lr is given for a batch scales it to the whole step's: rsb-a3, LAMB, 8e-3 at 2048.
    config = parse("--recipe", "rsb-a3", "-b", "256", "--grad-accum-steps", "2")
    assert config.batch_size == 512 and config.lr == pytest.approx(8e-3 * (512 / 2048) ** 0.5)


def test_pretrained_names_torchvisions_weights_where_they_exist(capsys):
    assert parse("--pretrained", "--model", "resnet18").init_from == "torchvision"
    line = error_line(capsys, "--pretrained", "--model", "resnet20")
    assert line.startswith("resnets: error: init_from='torchvision' (--pretrained): torchvision publishes ImageNet ")
    assert line.endswith("resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d, resnext101_32x8d, "
                         "wide_resnet50_2, wide_resnet101_2, vgg16, vgg19, not for resnet20")  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["--drop", "0.2"],
            "resnets: error: --drop is timm's classifier dropout, which resnets does not have; the nearest is "
            "--drop-path",
        ),
        (
            ["--drop=0.2"],
            "resnets: error: --drop is timm's classifier dropout, which resnets does not have; the nearest is "
            "--drop-path",
        ),
        (
            ["--sched", "step"],
            "resnets: error: --sched step is timm's decay every --decay-epochs; resnets' --schedule step divides "
            "the lr at --milestones, timm's --sched multistep",
        ),
        (
            ["--opt", "sgd"],
            "resnets: error: --opt sgd is timm's SGD with Nesterov momentum: write --opt nesterov (or --opt "
            "momentum for plain momentum, the paper's)",
        ),
        (
            ["--opt", "adam"],
            "resnets: error: --opt 'adam' is not one of timm's names that resnets takes: momentum, nesterov, "
            "adamw, lamb, lars",
        ),
        (
            ["--mixup-off-epoch", "10"],
            "resnets: error: --mixup-off-epoch (timm: no mixup after epoch N) is not built; --mixup and "
            "--cutmix last the whole run",
        ),
        (
            ["--aa", "augmix-m5-w4-d2"],
            "resnets train: error: argument --randaugment/--aa: 'augmix-m5-w4-d2' is timm's AugMix, which is not "
            "built: give a RandAugment spec (rand-m9-mstd0.5-inc1, ...), torchvision, or --trivialaugment",
        ),
        (
            ["--aa", "original-mstd0.5"],
            "resnets train: error: argument --randaugment/--aa: 'original-mstd0.5' is timm's AutoAugment, which is "
            "not built: give a RandAugment spec (rand-m9-mstd0.5-inc1, ...), torchvision, or --trivialaugment",
        ),
        (
            ["--crop-pct", "0.95"],
            "resnets: error: --crop-pct is timm's test crop ratio: give the sides, --test-size S --test-resize "
            "R (0.95 at 224: --test-resize 235)",
        ),
        (
            ["--grad-accum-steps", "2", "--accumulate", "2"],
            "resnets: error: --grad-accum-steps (timm's) and --accumulate (resnets') both split the batch: give one",
        ),
    ],
)
def test_timms_flags_that_mean_otherwise_are_one_line_naming_the_option_to_use(argv, line, capsys):
    assert error_line(capsys, *argv) == line


def test_every_refused_flag_is_refused_alone_with_its_own_line(capsys):
    for flags, why in TIMM_REFUSED.items():
        for flag in flags:
            line = error_line(capsys, flag, "1")
            assert line == f"resnets: error: {why.format(flag=flag)}"
            assert flag in line and "{" not in line


def test_help_shows_timms_names_and_the_length_the_default_recipe_trains(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line a flag
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for shown in (
        "--label-smoothing SMOOTHING, --smoothing SMOOTHING",
        "--weight-decay DECAY, --wd DECAY",
        "--log-every EVERY, --log-interval EVERY",
        "--image-size SIZE, --img-size SIZE",
        "--ema DECAY, --model-ema-decay DECAY",
        "--randaugment [SPEC], --aa [SPEC]",
        "--gamma GAMMA, --decay-rate GAMMA, --dr GAMMA",
        "  --model-ema ",
        "  --grad-accum-steps K ",
        "  --pretrained ",
        "  --sched NAME ",
        "  --opt NAME ",
        "  --no-aug ",
        "  --min-lr LR ",
        "  --warmup-lr LR ",
    ):
        assert shown in text, shown
    # paper-cifar counts iterations: its --epochs default is none, and the help says what it trains instead.
    (epochs,) = [line for line in text.splitlines() if line.startswith("  --epochs EPOCHS")]
    assert epochs.endswith("(default: the recipe's; paper-cifar: none, 64,000 iterations)")
    assert "--drop " not in text  # the refused flags are not offered
