"""Everyday use: extending a finished run, fine-tuning that says what it did, recipes on small data, the
notes a run starts with (a recipe's length in iterations on a subset, images dropped each epoch)."""

import io
import os
from pathlib import Path

import pytest
import torch
import yaml

from resnets import create_model
from resnets.cli import main
from resnets.train import TrainConfig, load_checkpoint, train
from resnets.train.config import check_resumable
from resnets.train.metrics import TIMING_FIELDS
from resnets.train.recipes import length_note, resolve_config, small_data_note
from resnets.train.rundir import claimed
from resnets.train.schedule import LRSchedule


def err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in history]


# ---------------------------------------------------------------------------------------- extending a run


def test_a_finished_run_extended_ends_as_one_trained_that_long_from_the_start(tiny_argv, tmp_path, capsys):
    """At a constant lr the schedule is the same for any length: an extended run is bitwise the longer run."""
    extended, reference = tmp_path / "extended", tmp_path / "reference"
    assert main(["train", *tiny_argv(extended, schedule="constant")]) == 0  # 2 epochs of 8 steps
    capsys.readouterr()
    assert main(["train", "--resume", str(extended), "--epochs", "3"]) == 0
    lines = err_lines(capsys)
    assert lines[0] == f"resuming {extended} from last.pt (epoch 3, step 16)"
    assert lines[1] == f"extending {extended} from 2 to 3 epochs: the learning-rate schedule is recomputed for 3"
    assert yaml.safe_load((extended / "config.yaml").read_text())["epochs"] == 3
    assert main(["train", *tiny_argv(reference, schedule="constant", epochs=3)]) == 0
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (extended, reference))
    assert a["step"] == b["step"] == 24
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert without_timing(a["history"]) == without_timing(b["history"])
    assert load_checkpoint(extended / "checkpoints" / "last.pt")["config"]["epochs"] == 3


def test_an_extended_cosine_schedule_is_recomputed_for_the_new_length(tiny_config):
    train(tiny_config(schedule="cosine", epochs=2))
    result = train(tiny_config(schedule="cosine", epochs=4), stream=io.StringIO())
    # 8 steps an epoch: the records of epochs 3 and 4 hold the lr of steps 23 and 31 of a 32-step cosine.
    longer = LRSchedule(tiny_config(schedule="cosine", epochs=4), total_steps=32, steps_per_epoch=8)
    assert [r["lr"] for r in result.history[2:]] == [longer.lr(23), longer.lr(31)]
    assert result.history[1]["lr"] == LRSchedule(tiny_config(schedule="cosine"), 16, 8).lr(15)  # as it was
    assert 0 < longer.lr(31) < longer.lr(23) < 0.05 / 2


def test_a_length_below_what_the_run_trained_or_in_another_unit_is_refused(tiny_argv, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *tiny_argv(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "1"]) == 2
    assert err_lines(capsys) == [
        f"resnets: error: --epochs 1 is shorter than the 2 epochs that {run} has trained: give at least 2"
    ]
    assert main(["train", "--resume", str(run), "--iterations", "40"]) == 2
    assert err_lines(capsys) == [f"resnets: error: {run} holds a run of 2 epochs: give its new length with --epochs N"]
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2  # refused before anything is written
    assert main(["train", "--resume", str(run), "--lr", "0.1"]) == 2  # any other setting: as before
    assert err_lines(capsys) == [
        f"resnets: error: {run} holds a run with lr=0.05, not 0.1: resume it with its own settings, or choose "
        "another --out"
    ]


def test_check_resumable_changes_a_length_only_where_it_knows_the_position():
    saved, where = TrainConfig(epochs=4).to_dict(), Path("runs/x")
    # Stopped inside epoch 2 (1 finished, 3 steps into the next): 2 epochs are the least it can end at.
    position = {"epoch": 1, "epoch_step": 3, "step": 11}
    assert check_resumable(saved, TrainConfig(epochs=4), where, position) is None
    assert check_resumable(saved, TrainConfig(epochs=2), where, position) == (
        "shortening runs/x from 4 to 2 epochs: the learning-rate schedule is recomputed for 2"
    )
    with pytest.raises(ValueError, match=r"^--epochs 1 is shorter than the 2 epochs that runs/x has trained"):
        check_resumable(saved, TrainConfig(epochs=1), where, position)
    in_steps = TrainConfig(iterations=100).to_dict()
    assert check_resumable(in_steps, TrainConfig(iterations=150), where, position) == (
        "extending runs/x from 100 to 150 iterations: the learning-rate schedule is recomputed for 150"
    )
    with pytest.raises(ValueError, match=r"^--iterations 10 is shorter than the 11 iterations that runs/x"):
        check_resumable(in_steps, TrainConfig(iterations=10), where, position)
    # Without a position (the degradation experiment's finished runs) the length is a setting like any other.
    with pytest.raises(ValueError, match=r"holds a run with epochs=4, not 8"):
        check_resumable(saved, TrainConfig(epochs=8), where)


# ---------------------------------------------------------------------------------------------- fine-tuning


def test_fine_tuning_says_where_its_weights_came_from_and_what_trains(tiny_argv, tmp_path, capsys):
    source = tmp_path / "source"
    assert main(["train", *tiny_argv(source, epochs=1)]) == 0
    weights = source / "model.safetensors"
    capsys.readouterr()
    argv = tiny_argv(tmp_path / "tuned", epochs=1, data="synthetic:1,16,16,3")
    assert main(["train", *argv, "--init-from", str(weights), "--freeze-backbone"]) == 0
    lines = err_lines(capsys)
    total = sum(p.numel() for p in create_model("resnet8", in_channels=1, num_classes=3).parameters())
    head = 64 * 3 + 3  # fc: 64 features to 3 classes, and its bias
    at = lines.index(f"fine-tuning from {weights}: head fc replaced (4 -> 3 classes, newly initialised)")
    assert lines[at + 1] == (
        f"parameters: {head:,} trainable, {total - head:,} frozen (--freeze-backbone: the head alone learns; "
        "BatchNorm statistics are kept)"
    )
    assert lines[at - 1].startswith("training resnet8 ")  # right below the header
    assert main(["train", *tiny_argv(tmp_path / "same", epochs=1), "--init-from", str(weights)]) == 0
    lines = err_lines(capsys)
    total = sum(p.numel() for p in create_model("resnet8", in_channels=1, num_classes=4).parameters())
    at = lines.index(f"fine-tuning from {weights}: head fc kept (4 classes, loaded)")
    assert lines[at + 1] == f"parameters: {total:,} trainable, 0 frozen"


def test_pretrained_starts_from_torchvisions_imagenet_weights_with_a_new_head(monkeypatch):
    import torchvision

    import resnets.models.hub as hub
    from resnets.train.network import build_network

    published = torchvision.models.resnet18(weights=None).state_dict()  # stands in for the download
    monkeypatch.setattr(hub, "download", lambda weights: published)
    config = TrainConfig(model="resnet18", init_from="torchvision", data="synthetic:3,64,64,4")
    model, lines = build_network(config, 3, 4, (64, 64))
    assert lines[0] == (
        "fine-tuning from torchvision's ResNet18_Weights.IMAGENET1K_V1: head fc replaced (1000 -> 4 classes, "
        "newly initialised)"
    )
    assert torch.equal(model.conv1.weight, published["conv1.weight"])
    assert torch.equal(model.layer4[1].bn2.running_var, published["layer4.1.bn2.running_var"])
    assert model.fc.weight.shape == (4, 512)
    with pytest.raises(ValueError, match=r"^stride_at='1x1' contradicts --pretrained: torchvision's resnet50 is"):
        build_network(config.replace(model="resnet50", model_options={"stride_at": "1x1"}), 3, 4, (64, 64))


# ------------------------------------------------------------------------------------ recipes on small data


def test_an_imagenet_recipe_on_small_images_leaves_its_image_folder_settings_out():
    config = resolve_config({"model": "resnet20", "data": "fashion-mnist"}, recipe="bag-of-tricks")
    defaults = TrainConfig()
    assert (config.crop, config.color_jitter, config.lighting) == (defaults.crop, 0.0, defaults.lighting)
    # The rest of the recipe is kept: Nesterov, cosine after 5 warm-up epochs, label smoothing, zero-init.
    assert (config.nesterov, config.schedule, config.warmup_epochs, config.label_smoothing) == (True, "cosine", 5, 0.1)
    assert config.model_options == {"zero_init_residual": True} and config.epochs == 120
    assert small_data_note(config) == (
        "bag-of-tricks on fashion-mnist: its image-folder settings (crop='random-resized', color_jitter=0.4) are "
        "left out; small images take the paper's pad-and-crop and flips instead"
    )
    a3 = resolve_config({"model": "resnet20", "data": "cifar10"}, recipe="rsb-a3")
    assert (a3.optimizer, a3.randaugment, a3.image_size, a3.interpolation) == (
        "lamb", "rand-m6-mstd0.5-inc1", 224, "bilinear",
    )  # fmt: skip
    assert "(crop='random-resized', image_size=160, test_resize=235, lighting=0.0, interpolation='random')" in (
        small_data_note(a3) or ""
    )
    with pytest.raises(ValueError, match="crop applies to image folders, not to fashion-mnist"):  # asked for: refused
        resolve_config({"data": "fashion-mnist", "crop": "random-resized"}, recipe="bag-of-tricks")
    assert small_data_note(resolve_config({}, recipe="fast")) is None


def test_an_imagenet_recipe_without_its_folder_says_to_pass_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--recipe", "rsb-a3", "--epochs", "1"]) == 2
    assert err_lines(capsys) == [
        "resnets: error: rsb-a3 trains on ImageNet, and no folder imagenet (its --data imagefolder:imagenet) is "
        "here: pass --data imagefolder:PATH, PATH holding train/ and val/ class folders"
    ]
    assert list(tmp_path.iterdir()) == []  # no run folder was made


# ------------------------------------------------------------------------------- what a run says as it starts


class Started(Exception):
    """Raised where the first epoch would begin: the run's opening lines are written by then."""


def test_a_recipe_counting_iterations_on_a_subset_says_so_first(tmp_path, monkeypatch):
    from resnets.train.engine import Trainer

    monkeypatch.setattr(Trainer, "_train_epoch", lambda self: (_ for _ in ()).throw(Started()))
    flags = {"model": "resnet8", "data": "synthetic:1,16,16,4", "subset": 256, "device": "cpu", "out": str(tmp_path)}
    config = resolve_config(flags)  # paper-cifar: 64,000 iterations of batch 128, 2 a pass over 256 images
    stream = io.StringIO()
    with pytest.raises(Started):
        train(config, stream=stream)
    first, second = stream.getvalue().splitlines()[:2]
    assert first == (
        "paper-cifar counts 64,000 iterations, not epochs: on --subset 256 that is 32,000 epochs of 2 steps "
        "(--epochs N sets a length in epochs)"
    )
    assert second.startswith("training resnet8 ") and "2 steps/epoch, 64,000 steps" in second
    assert length_note(resolve_config({**flags, "iterations": 10}), 2) is None  # a length of the run's own
    assert length_note(resolve_config({**flags, "epochs": 3}), 2) is None


@pytest.mark.parametrize(
    ("changes", "warning"),
    [
        (
            {"subset": 100},
            "--subset 100 leaves 100 training images, 3 batches of 32: 4 of them (a different 4 each "
            "epoch) are dropped from every epoch; --subset 96 uses every image",
        ),
        (
            {"subset": 110, "val_split": 10},
            "--subset 110 leaves 100 training images, 3 batches of 32: 4 of them (a "
            "different 4 each epoch) are dropped from every epoch; --subset 106 uses every image",
        ),
        ({"subset": 96}, None),
        ({"subset": 20}, None),  # fewer images than a batch: one batch of all of them
    ],
)
def test_a_subset_that_leaves_a_partial_batch_warns_that_it_is_dropped(tiny_config, changes, warning):
    stream = io.StringIO()
    result = train(tiny_config(epochs=1, **changes), stream=stream)
    lines = stream.getvalue().splitlines()
    warnings = [line.removeprefix("warning: ") for line in lines if line.startswith("warning: ")]
    assert warnings == ([warning] if warning else [])
    # The epoch trained full batches only: the step count says how many images it saw.
    steps, n_train = result.history[0]["step"], changes["subset"] - changes.get("val_split", 0)
    assert steps == max(1, n_train // 32)


def test_resuming_a_run_folder_in_use_says_so(tiny_argv, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *tiny_argv(run, epochs=1)]) == 0
    capsys.readouterr()
    with claimed(run):  # another live process holds the folder's lock
        assert main(["train", "--resume", str(run)]) == 2
    assert err_lines(capsys) == [
        f"resnets: error: run folder {run} is in use by another run (process {os.getpid()}); it is still "
        "training: resume it once that process has stopped"
    ]
    assert main(["train", "--resume", str(run)]) == 0  # free again
