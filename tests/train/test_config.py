"""Recipes hold the paper's numbers; YAML files and flags override them, bad values are named."""

import json
from pathlib import Path

import pytest

from resnets.cli import build_parser
from resnets.commands.train import resolve_train_config
from resnets.train import RECIPES, TrainConfig, get_recipe
from resnets.train.schedule import LRSchedule


def test_paper_cifar_is_section_4_2():
    c = get_recipe("paper-cifar", "resnet56")
    assert (c.batch_size, c.lr, c.momentum, c.weight_decay, c.init) == (128, 0.1, 0.9, 1e-4, "he")
    assert c.iterations == 64_000 and c.schedule == "step"
    schedule = LRSchedule(c, c.iterations)
    assert [schedule.lr(s) for s in (0, 31_999)] == [0.1, 0.1]
    assert schedule.lr(32_000) == pytest.approx(0.01) and schedule.lr(48_000) == pytest.approx(0.001)
    assert c.warmup_lr is None


def test_paper_cifar_warms_up_110_layers_and_deeper():
    for name in ("resnet110", "resnet1202", "plain110"):
        c = get_recipe("paper-cifar", name)
        assert c.warmup_lr == 0.01 and c.warmup_until_err == 0.8


def test_paper_imagenet_and_explainer_recipes():
    imagenet = get_recipe("paper-imagenet", "resnet50")
    assert (imagenet.batch_size, imagenet.lr, imagenet.weight_decay, imagenet.schedule) == (256, 0.1, 1e-4, "plateau")
    assert imagenet.iterations == 600_000 and imagenet.init == "he"
    explainer = get_recipe("explainer", "resnet20")
    assert (explainer.init, explainer.weight_decay, explainer.batch_size, explainer.lr) == ("xavier", 1e-5, 256, 0.1)
    fast = get_recipe("fast", "resnet20")
    assert fast.nesterov and fast.schedule == "onecycle" and fast.label_smoothing > 0 and fast.tta_flip
    assert set(RECIPES) == {
        "paper-cifar",
        "paper-imagenet",
        "explainer",
        "fast",
        "rsb-a3",
        "bag-of-tricks",
        "fmnist-best",
    }


def parse(*argv):
    return resolve_train_config(build_parser().parse_args(["train", *argv]))


def test_flags_override_yaml_which_overrides_the_recipe(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("lr: 0.05\nbatch_size: 64\nmilestones: [0.3, 0.6]\nnesterov: true\n")
    c = parse("--recipe", "paper-cifar", "--config", str(config_file), "--batch-size", "32", "--model", "resnet110")
    assert (c.lr, c.batch_size, c.milestones, c.nesterov) == (0.05, 32, [0.3, 0.6], True)
    assert c.warmup_lr == 0.01  # the recipe was resolved for the chosen model
    assert c.weight_decay == 1e-4 and c.iterations == 64_000


def test_epochs_replace_the_recipes_iterations():
    c = parse("--epochs", "3")
    assert c.epochs == 3 and c.iterations is None
    c = parse("--iterations", "500", "--lr", "0.2", "--no-amp", "--shortcut", "B")
    assert c.iterations == 500 and c.lr == 0.2 and c.amp is False and c.model_options == {"shortcut": "B"}


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--lr", "fast"], "lr='fast' is not a valid float"),
        (["--batch-size", "0"], "batch_size=0 must be a positive integer"),
        (["--milestones", "0.8,0.2"], "milestones"),
        (["--recipe", "speedy"], "unknown recipe 'speedy'; accepted: paper-cifar"),
        (["--device", "tpu"], "device='tpu' is not one of auto, cpu, cuda, mps"),
        (["--freeze-backbone"], "freeze_backbone needs init_from"),
        (["--compile-mode", "max-autotune"], "compile_mode='max-autotune' is torch.compile's mode: add compile"),
    ],
)
def test_bad_values_are_named(argv, fragment):
    with pytest.raises(ValueError) as err:
        parse(*argv)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("schedule", "linear", "schedule='linear' is not one of step, plateau, onecycle, cosine, constant"),
        ("compile_mode", "fast", "compile_mode='fast' is not one of default, reduce-overhead"),
        ("lr_base_scale", "cube", "lr_base_scale='cube' is not one of linear, sqrt"),
    ],
)
def test_a_closed_list_refuses_alike_from_a_flag_and_from_a_config_file(tmp_path, capsys, flag, value, message):
    """One list per field (CHOICES): argparse's choices for the flag, validate()'s for --config and recipes."""
    with pytest.raises(SystemExit) as stop:
        parse("--compile", "--" + flag.replace("_", "-"), value)
    assert stop.value.code == 2
    assert f"invalid choice: '{value}'" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text(f"compile: true\n{flag}: {value}\n")
    with pytest.raises(ValueError, match=message):
        parse("--config", str(config))


def test_an_optional_closed_field_takes_none_from_the_command_line():
    assert parse("--lr-base-scale", "none").lr_base_scale is None
    assert parse("--lr-base-scale", "sqrt").lr_base_scale == "sqrt"


def test_yaml_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown config key 'learning_rate'"):
        parse("--config", str(bad))
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        parse("--config", str(tmp_path / "missing.yaml"))


def test_config_round_trips_through_a_dict():
    c = TrainConfig(model="resnet32", lr=0.05, model_options={"shortcut": "B"})
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_schedules():
    c = TrainConfig(lr=0.4, schedule="onecycle", onecycle_warmup=0.25)
    s = LRSchedule(c, 100)
    assert s.lr(0) == 0 and s.lr(25) == pytest.approx(0.4) and s.lr(100) == 0
    assert s.lr(50) == pytest.approx(0.4 * 50 / 75)
    cosine = LRSchedule(TrainConfig(lr=0.1, schedule="cosine"), 100)
    assert cosine.lr(50) == pytest.approx(0.05) and cosine.lr(100) == pytest.approx(0.0)


def test_plateau_divides_after_patience_and_restores_from_state():
    s = LRSchedule(TrainConfig(lr=0.1, schedule="plateau", plateau_patience=2), 1000)
    assert not s.observe_epoch(0.5)
    assert not s.observe_epoch(0.5)  # one epoch without improvement
    assert s.observe_epoch(0.51) and s.lr(10) == pytest.approx(0.01)
    copy = LRSchedule(TrainConfig(lr=0.1, schedule="plateau", plateau_patience=2), 1000)
    copy.load_state_dict(s.state_dict())
    assert copy.lr(10) == s.lr(10) and copy.best == 0.5


def test_warmup_holds_lr_until_training_error_below_80_percent():
    s = LRSchedule(get_recipe("paper-cifar", "resnet110"), 64_000)
    assert s.lr(0) == 0.01
    assert not s.observe_train_error(0.85) and s.lr(300) == 0.01
    assert s.observe_train_error(0.79) and s.lr(400) == 0.1


def test_the_paper_recipes_normalise_and_augment_as_the_paper_and_old_runs_resume_as_they_began():
    from resnets.data.transforms import FolderTransforms
    from resnets.train import get_recipe

    assert get_recipe("paper-cifar", "resnet20").resolved().normalize == "pixel-mean"  # section 4.2
    assert get_recipe("fast", "resnet20").normalize == "pixel-mean-std"  # the pipeline of its measured figures
    assert get_recipe("paper-imagenet", "resnet50").color_jitter == 0.0  # AlexNet's PCA lighting alone
    assert FolderTransforms().jitter == 0.0 and FolderTransforms().lighting == 0.1
    assert TrainConfig(data="imagefolder:/x", color_jitter=0.4).color_jitter == 0.4
    with pytest.raises(ValueError, match="color_jitter applies to image folders, not to fashion-mnist"):
        TrainConfig(color_jitter=0.4)
    with pytest.raises(ValueError, match="normalize='zscore' is not one of pixel-mean, pixel-mean-std, imagenet"):
        TrainConfig(normalize="zscore")
    # A config saved before these fields existed resumes with the values it had then.
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("normalize", "color_jitter")}
    restored = TrainConfig.from_dict(old)
    assert (restored.normalize, restored.color_jitter) == ("pixel-mean-std", 0.0)
    restored = TrainConfig.from_dict({**old, "data": "imagefolder:/data/imagenet"})
    assert (restored.normalize, restored.color_jitter) == ("imagenet", 0.4)  # ImageNet's statistics, as always


def test_timm_and_torchvision_flag_names_work_as_aliases(tmp_path):
    config = parse(
        "-b", "64", "--sched", "cosine", "-j", "2", "--output", str(tmp_path / "x"),
        "--initial-checkpoint", "w.pt", "--milestones", "0.3", "0.6",
    )  # fmt: skip
    assert (config.batch_size, config.schedule, config.num_workers) == (64, "cosine", 2)
    assert (config.out, config.init_from, config.milestones) == (str(tmp_path / "x"), "w.pt", [0.3, 0.6])
    assert parse("--milestones", "0.25,0.5").milestones == [0.25, 0.5]
    assert parse("--workers", "3", "--lr-scheduler", "step").num_workers == 3


def test_every_flag_has_help_with_its_default_and_no_python_field_names(capsys):
    import re

    for command in (["train"], ["eval"], ["predict"], ["experiment", "degradation"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--help"])
        text = capsys.readouterr().out
        flags = [line.split()[0] for line in text.splitlines() if re.match(r"  --?\w", line)]
        assert flags, command
        blocks = re.split(r"\n  (?=-)", text.split("options:")[1])[1:]  # one block per flag: its lines and help
        assert all(len(block.split()) > 2 for block in blocks), command  # a flag and some help, never bare
        assert not re.search(r"\b(warmup_until_err|batch_size|eval_batch_size|init_from)\b", text), command
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: the recipe's; paper-cifar: 128)" in " ".join(text.split())


def test_the_recipes_of_2015_are_pinned_and_every_newer_option_is_off_in_them():
    """paper_recipes.json holds these recipes' configs as they were before the options of later
    recipes (mixup, EMA, LAMB, ...) existed; the loader's worker count alone has changed since."""
    pinned = json.loads((Path(__file__).parent / "paper_recipes.json").read_text())
    off = TrainConfig().to_dict()
    for key, values in pinned.items():
        name, model = key.split()
        config = get_recipe(name, model).to_dict()
        assert {k: config[k] for k in values} == values, key
        newer = set(config) - set(values)
        assert newer >= {"mixup", "cutmix", "ema", "optimizer", "drop_path", "random_erasing", "bce"}
        assert {k: config[k] for k in newer} == {k: off[k] for k in newer}, key
        assert off["optimizer"] == "sgd" and off["ema"] is None and not off["mixup"] and off["decay_norm_bias"] is None
        assert get_recipe(name, model).decays_norm_bias  # none: SGD's way, the paper's decay of every parameter


def test_a_run_saved_before_newer_fields_existed_resumes_and_a_changed_field_is_named(tmp_path):
    from resnets.train.config import check_resumable

    config = TrainConfig(data="imagefolder:/data/imagenet")
    newer = ("decode", "optimizer", "crop", "mixup", "repeated_aug", "decay_norm_bias", "compile_mode")
    old = {k: v for k, v in config.to_dict().items() if k not in newer}
    check_resumable(old, config, tmp_path)  # each missing field had its default then
    with pytest.raises(ValueError, match=r"holds a run with decode='workers', not 'device'"):
        check_resumable(old, config.replace(decode="device"), tmp_path)
    with pytest.raises(ValueError, match=r"holds a run with optimizer='sgd', not 'lamb'"):
        check_resumable(old, config.replace(optimizer="lamb"), tmp_path)
